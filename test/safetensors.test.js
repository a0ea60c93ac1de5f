'use strict';
const test = require('tape');
const path = require('node:path');
const os = require('node:os');
const fs = require('node:fs');
const {
  parseSafetensors,
  readSafetensors,
  serializeSafetensors,
  halfToFloat,
  floatToHalf,
  floatToBf16,
} = require('../dist/weights/safetensors');
const { WeightsError, OptionsError } = require('../dist/errors');

/** Builds a raw file: u64 LE header length, header (object or raw string), data bytes. */
function rawFile(header, data = Buffer.alloc(0)) {
  const json = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  return Buffer.concat([len, json, Buffer.from(data)]);
}

function f32Bits(x) {
  const f = new Float32Array([x]);
  return new Uint32Array(f.buffer)[0];
}

/** Asserts that fn throws a WeightsError whose message matches every regex. */
function throwsWeights(t, fn, patterns, label) {
  let err = null;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  t.ok(err instanceof WeightsError, `${label}: throws WeightsError`);
  t.equal(err && err.code, 'EVIT_BAD_WEIGHTS', `${label}: code EVIT_BAD_WEIGHTS`);
  for (const re of patterns) t.match(err ? err.message : '', re, `${label}: message matches ${re}`);
}

test('F32 round trip is bit exact, keeps order, dtypes and metadata', (t) => {
  const a = new Float32Array([0, -0, 1, -2.5, 3.4028234663852886e38, 1e-40, Infinity, -Infinity, NaN, Math.PI]);
  const b = new Float32Array(24).map((_, i) => Math.fround(Math.sin(i) * 100));
  const buf = serializeSafetensors(
    new Map([
      ['z.first', { dtype: 'F32', shape: [2, 5], data: a }],
      ['a.second', { dtype: 'F32', shape: [2, 3, 4], data: b }],
      ['scalar', { dtype: 'F32', shape: [], data: new Float32Array([7]) }],
      ['empty', { dtype: 'F32', shape: [0, 3], data: new Float32Array(0) }],
    ]),
    { format: 'pt', note: 'x' },
  );
  t.equal((buf.readUInt32LE(0) + 8) % 8, 0, 'data section is 8-byte aligned');
  const r = parseSafetensors(buf);
  t.deepEqual([...r.tensors.keys()], ['z.first', 'a.second', 'scalar', 'empty'], 'header order kept');
  t.deepEqual(r.metadata, { format: 'pt', note: 'x' }, 'metadata');
  t.deepEqual([...r.dtypes.values()], ['F32', 'F32', 'F32', 'F32'], 'dtypes');
  const za = r.tensors.get('z.first');
  t.deepEqual(za.shape, [2, 5], 'shape');
  t.ok(za.data instanceof Float32Array, 'Float32Array');
  t.deepEqual(Array.from(za.data, f32Bits), Array.from(a, f32Bits), 'bits identical incl. -0, inf, NaN, subnormal');
  t.deepEqual(Array.from(r.tensors.get('a.second').data), Array.from(b), 'second tensor');
  t.deepEqual(r.tensors.get('scalar'), { shape: [], data: new Float32Array([7]) }, 'scalar');
  t.equal(r.tensors.get('empty').data.length, 0, 'zero-element tensor');
  t.deepEqual(parseSafetensors(serializeSafetensors(new Map())).metadata, {}, 'no metadata gives {}');
  t.end();
});

test('F32 at unaligned offsets is decoded correctly', (t) => {
  const vals = [1.5, -2.25, 1e-3, 123456.789];
  const data = Buffer.alloc(3 + 16);
  vals.forEach((v, i) => data.writeFloatLE(v, 3 + 4 * i));
  // Header of odd length so the data section itself is unaligned too.
  const file = rawFile({ pad: { dtype: 'F16', shape: [1], data_offsets: [0, 2] }, w: { dtype: 'F32', shape: [4], data_offsets: [3, 19] } }, data);
  const r = parseSafetensors(file);
  t.deepEqual(Array.from(r.tensors.get('w').data), vals.map(Math.fround), 'values');
  // Also from a view with an odd byteOffset into a larger buffer.
  const big = Buffer.alloc(file.length + 1);
  file.copy(big, 1);
  const r2 = parseSafetensors(big.subarray(1));
  t.deepEqual(Array.from(r2.tensors.get('w').data), vals.map(Math.fround), 'values from an offset view');
  t.end();
});

test('F16 decoding of known bit patterns', (t) => {
  const cases = [
    [0x0000, 0],
    [0x8000, -0],
    [0x0001, 2 ** -24], // smallest subnormal
    [0x03ff, 1023 * 2 ** -24], // largest subnormal
    [0x8001, -(2 ** -24)],
    [0x0400, 2 ** -14], // smallest normal
    [0x3c00, 1],
    [0xc000, -2],
    [0x3555, 0.333251953125],
    [0x7bff, 65504],
    [0x7c00, Infinity],
    [0xfc00, -Infinity],
  ];
  const data = Buffer.alloc(2 * (cases.length + 1));
  cases.forEach(([h], i) => data.writeUInt16LE(h, 2 * i));
  data.writeUInt16LE(0x7e00, 2 * cases.length);
  const n = cases.length + 1;
  const r = parseSafetensors(rawFile({ h: { dtype: 'F16', shape: [n], data_offsets: [0, 2 * n] } }, data));
  const got = r.tensors.get('h').data;
  t.equal(r.dtypes.get('h'), 'F16', 'dtype F16');
  cases.forEach(([h, v], i) => t.ok(Object.is(got[i], v), `0x${h.toString(16)} -> ${Object.is(v, -0) ? '-0' : v}`));
  t.ok(Number.isNaN(got[cases.length]), '0x7e00 -> NaN');
  t.ok(Object.is(halfToFloat(0x8000), -0), 'halfToFloat(0x8000) is -0');
  t.end();
});

test('BF16 decoding of known bit patterns', (t) => {
  const cases = [
    [0x3f80, 1],
    [0xc040, -3],
    [0x3eab, 0.333984375],
    [0x0001, 2 ** -133], // subnormal
    [0x8000, -0],
    [0x7f80, Infinity],
    [0xff80, -Infinity],
    [0x7f7f, 3.3895313892515355e38],
  ];
  const n = cases.length + 1;
  const data = Buffer.alloc(2 * n);
  cases.forEach(([h], i) => data.writeUInt16LE(h, 2 * i));
  data.writeUInt16LE(0x7fc0, 2 * cases.length);
  const r = parseSafetensors(rawFile({ b: { dtype: 'BF16', shape: [n], data_offsets: [0, 2 * n] } }, data));
  const got = r.tensors.get('b').data;
  cases.forEach(([h, v], i) => t.ok(Object.is(got[i], v), `0x${h.toString(16)} -> ${Object.is(v, -0) ? '-0' : v}`));
  t.ok(Number.isNaN(got[cases.length]), '0x7fc0 -> NaN');
  t.end();
});

test('serialize rounds F16 and BF16 to nearest even', (t) => {
  const f16 = [
    [1, 0x3c00],
    [1 + 2 ** -11, 0x3c00], // tie -> even (down)
    [1 + 3 * 2 ** -11, 0x3c02], // tie -> even (up)
    [1 + 2 ** -11 + 2 ** -20, 0x3c01], // above the tie
    [65504, 0x7bff],
    [65519, 0x7bff], // below the overflow threshold
    [65520, 0x7c00], // rounds to inf
    [1e6, 0x7c00],
    [-1e6, 0xfc00],
    [2 ** -24, 0x0001],
    [2 ** -25, 0x0000], // tie -> even zero
    [1.5 * 2 ** -25, 0x0001],
    [3 * 2 ** -25, 0x0002], // tie between subnormals 1 and 2 -> 2
    [1e-8, 0x0000],
    [-0, 0x8000],
    [Infinity, 0x7c00],
    [-Infinity, 0xfc00],
  ];
  for (const [v, h] of f16) t.equal(floatToHalf(v), h, `F16 ${v} -> 0x${h.toString(16)}`);
  t.equal(floatToHalf(NaN) & 0x7c00, 0x7c00, 'F16 NaN exponent');
  t.notEqual(floatToHalf(NaN) & 0x3ff, 0, 'F16 NaN mantissa non-zero');

  const bf = [
    [1, 0x3f80],
    [1 + 2 ** -8, 0x3f80], // tie -> even (down)
    [1 + 3 * 2 ** -8, 0x3f82], // tie -> even (up)
    [1 + 2 ** -8 + 2 ** -20, 0x3f81],
    [-0, 0x8000],
    [3.4028234663852886e38, 0x7f80], // max float32 rounds to inf
    [-Infinity, 0xff80],
  ];
  for (const [v, h] of bf) t.equal(floatToBf16(v), h, `BF16 ${v} -> 0x${h.toString(16)}`);
  t.equal(floatToBf16(NaN) & 0x7fc0, 0x7fc0, 'BF16 NaN stays quiet NaN');

  // Through a file: the bytes written and the values read back.
  const vals = new Float32Array([1 + 2 ** -11, 1 + 3 * 2 ** -11, 65520, 2 ** -25, -0.1]);
  const buf = serializeSafetensors(new Map([
    ['h', { dtype: 'F16', shape: [5], data: vals }],
    ['b', { dtype: 'BF16', shape: [5], data: vals }],
  ]));
  const r = parseSafetensors(buf);
  t.deepEqual(Array.from(r.tensors.get('h').data), [1, 1 + 2 ** -9, Infinity, 0, halfToFloat(floatToHalf(-0.1))], 'F16 values read back');
  t.deepEqual(Array.from(r.tensors.get('b').data), Array.from(vals, (v) => {
    const u = new Uint32Array([floatToBf16(v) << 16]);
    return new Float32Array(u.buffer)[0];
  }), 'BF16 values read back');
  t.equal(r.tensors.get('b').data[4], -0.10009765625, 'BF16 -0.1');
  const dataStart = 8 + buf.readUInt32LE(0);
  t.equal(buf.readUInt16LE(dataStart), 0x3c00, 'F16 bytes little-endian');
  t.end();
});

test('serialize rejects bad input with OptionsError', (t) => {
  t.throws(() => serializeSafetensors(new Map([['x', { dtype: 'F32', shape: [3], data: new Float32Array(2) }]])), OptionsError, 'length mismatch');
  t.throws(() => serializeSafetensors(new Map([['x', { dtype: 'I64', shape: [1], data: new Float32Array(1) }]])), /dtype "I64"/, 'bad dtype');
  t.throws(() => serializeSafetensors(new Map([['x', { dtype: 'F32', shape: [-1], data: new Float32Array(0) }]])), /invalid shape/, 'bad shape');
  t.end();
});

test('malformed files: sizes and header', (t) => {
  throwsWeights(t, () => parseSafetensors(Buffer.alloc(5), 'm.safetensors'), [/m\.safetensors/, /5 bytes/, /too short/], 'fewer than 8 bytes');
  throwsWeights(t, () => parseSafetensors(Buffer.alloc(0)), [/0 bytes/], 'empty file');

  const past = rawFile('{}');
  past.writeBigUInt64LE(1000n, 0);
  throwsWeights(t, () => parseSafetensors(past), [/header length 1000/, /past the end of the file/, /byte 1008/, /10 bytes/], 'header length past the end');

  const huge = Buffer.alloc(16, 0xff);
  throwsWeights(t, () => parseSafetensors(huge), [/header length 18446744073709551615/], 'header length beyond 2^53');

  throwsWeights(t, () => parseSafetensors(rawFile('{"w": {"dtype": "F32",')), [/not valid JSON/, /bytes 8-/], 'header not JSON');
  throwsWeights(t, () => parseSafetensors(rawFile('[1,2]')), [/must be a JSON object/], 'header is an array');
  throwsWeights(t, () => parseSafetensors(rawFile('')), [/not valid JSON/], 'empty header');
  const badUtf8 = Buffer.concat([Buffer.from([3, 0, 0, 0, 0, 0, 0, 0]), Buffer.from([0x22, 0xff, 0x22])]);
  throwsWeights(t, () => parseSafetensors(badUtf8), [/not valid UTF-8/], 'header not UTF-8');
  throwsWeights(t, () => parseSafetensors(rawFile({ __metadata__: { a: 1 } })), [/__metadata__ entry "a" must be a string/], 'metadata value not a string');
  throwsWeights(t, () => parseSafetensors(rawFile({ __metadata__: 'x' })), [/__metadata__ must be an object/], 'metadata not an object');
  t.end();
});

test('malformed files: tensor entries', (t) => {
  const d8 = Buffer.alloc(8);
  throwsWeights(t, () => parseSafetensors(rawFile({ w: { dtype: 'F32', shape: [2] } }, d8)), [/tensor "w"/, /missing "data_offsets"/], 'missing data_offsets');
  throwsWeights(t, () => parseSafetensors(rawFile({ w: { shape: [2], data_offsets: [0, 8] } }, d8)), [/tensor "w"/, /missing "dtype"/], 'missing dtype');
  throwsWeights(t, () => parseSafetensors(rawFile({ w: { dtype: 'F32', data_offsets: [0, 8] } }, d8)), [/tensor "w"/, /missing "shape"/], 'missing shape');
  throwsWeights(t, () => parseSafetensors(rawFile({ w: 5 }, d8)), [/tensor "w"/, /must be an object/], 'entry not an object');

  throwsWeights(t, () => parseSafetensors(rawFile({ 'pos.ids': { dtype: 'I64', shape: [1], data_offsets: [0, 8] } }, d8)),
    [/tensor "pos\.ids"/, /dtype I64/, /F32, F16, BF16/], 'I64 dtype');
  throwsWeights(t, () => parseSafetensors(rawFile({ w: { dtype: 'F64', shape: [1], data_offsets: [0, 8] } }, d8)),
    [/tensor "w"/, /unsupported dtype F64/], 'F64 dtype');
  throwsWeights(t, () => parseSafetensors(rawFile({ w: { dtype: 'Q7', shape: [1], data_offsets: [0, 8] } }, d8)),
    [/tensor "w"/, /unknown dtype Q7/], 'unknown dtype');

  throwsWeights(t, () => parseSafetensors(rawFile({ w: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, d8)),
    [/tensor "w"/, /span 8 bytes/, /\[3\]/, /needs 3 x 4 = 12 bytes/], 'shape/offset size mismatch');
  throwsWeights(t, () => parseSafetensors(rawFile({ w: { dtype: 'F16', shape: [2, 3], data_offsets: [0, 8] } }, d8)),
    [/tensor "w"/, /needs 6 x 2 = 12 bytes/], 'F16 size mismatch');

  throwsWeights(t, () => parseSafetensors(rawFile({ w: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, d8)),
    [/tensor "w"/, /\[0, 16\]/, /data section \(8 bytes/], 'offsets out of range');
  throwsWeights(t, () => parseSafetensors(rawFile({ w: { dtype: 'F32', shape: [0], data_offsets: [8, 4] } }, d8)),
    [/tensor "w"/, /begin > end/], 'begin > end');
  throwsWeights(t, () => parseSafetensors(rawFile({ w: { dtype: 'F32', shape: [1], data_offsets: [-4, 0] } }, d8)),
    [/tensor "w"/, /data_offsets must be/], 'negative offset');
  throwsWeights(t, () => parseSafetensors(rawFile({ w: { dtype: 'F32', shape: [1], data_offsets: [0] } }, d8)),
    [/tensor "w"/, /data_offsets must be \[begin, end\]/], 'one offset');

  throwsWeights(t, () => parseSafetensors(rawFile({
    a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
    b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] },
  }, Buffer.alloc(12))), [/tensor "b"/, /\[4, 12\]/, /overlap tensor "a"/, /\[0, 8\]/], 'overlapping offsets');
  throwsWeights(t, () => parseSafetensors(rawFile({
    b: { dtype: 'F32', shape: [1], data_offsets: [4, 8] },
    a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
  }, Buffer.alloc(8))), [/overlap/], 'overlap listed out of order');

  throwsWeights(t, () => parseSafetensors(rawFile({ w: { dtype: 'F32', shape: [-2], data_offsets: [0, 8] } }, d8)),
    [/tensor "w"/, /invalid dimension -2 at index 0/], 'negative dim');
  throwsWeights(t, () => parseSafetensors(rawFile({ w: { dtype: 'F32', shape: [2, 1.5], data_offsets: [0, 12] } }, Buffer.alloc(12))),
    [/tensor "w"/, /invalid dimension 1\.5 at index 1/], 'non-integer dim');
  throwsWeights(t, () => parseSafetensors(rawFile({ w: { dtype: 'F32', shape: ['2'], data_offsets: [0, 8] } }, d8)),
    [/tensor "w"/, /invalid dimension "2"/], 'string dim');
  throwsWeights(t, () => parseSafetensors(rawFile({ w: { dtype: 'F32', shape: 2, data_offsets: [0, 8] } }, d8)),
    [/tensor "w"/, /shape must be an array/], 'shape not an array');
  t.end();
});

test('truncated file is rejected before reading data', (t) => {
  const full = serializeSafetensors(new Map([
    ['a', { dtype: 'F32', shape: [4], data: new Float32Array(4) }],
    ['b', { dtype: 'BF16', shape: [8], data: new Float32Array(8) }],
  ]));
  t.ok(parseSafetensors(full).tensors.has('b'), 'the full file parses');
  const cut = full.subarray(0, full.length - 5);
  throwsWeights(t, () => parseSafetensors(cut, 'cut.safetensors'),
    [/cut\.safetensors/, /tensor "b"/, /\[16, 32\]/, /data section \(27 bytes/, /truncated/], 'cut in the data section');
  const cutHeader = full.subarray(0, 20);
  throwsWeights(t, () => parseSafetensors(cutHeader), [/past the end of the file/, /20 bytes/], 'cut in the header');
  t.end();
});

test('readSafetensors reads a file and reports a missing one', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'evit-st-'));
  try {
    const file = path.join(dir, 'w.safetensors');
    fs.writeFileSync(file, serializeSafetensors(new Map([['w', { dtype: 'F16', shape: [2], data: new Float32Array([0.5, -4]) }]]), { format: 'pt' }));
    const r = await readSafetensors(file);
    t.deepEqual(Array.from(r.tensors.get('w').data), [0.5, -4], 'values');
    t.deepEqual(r.metadata, { format: 'pt' }, 'metadata');

    fs.writeFileSync(file, Buffer.alloc(3));
    try {
      await readSafetensors(file);
      t.fail('short file should throw');
    } catch (e) {
      t.ok(e instanceof WeightsError && e.message.includes(file), 'parse errors name the path');
    }

    const missing = path.join(dir, 'nope.safetensors');
    try {
      await readSafetensors(missing);
      t.fail('missing file should throw');
    } catch (e) {
      t.ok(e instanceof WeightsError, 'WeightsError');
      t.equal(e.code, 'EVIT_BAD_WEIGHTS', 'code');
      t.match(e.message, /not found/, 'says not found');
      t.ok(e.message.includes(missing), 'names the path');
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
