'use strict';
const test = require('tape');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { parseNpy, readNpy, serializeNpy } = require('../dist/npy');
const { InputError } = require('../dist/errors');

const FIX = path.join(__dirname, 'fixtures', 'npy');
// The array every *_2x3 fixture holds (written by numpy 1.24).
const EXPECTED_2x3 = Float32Array.from([1.5, -2.25, 3.0, 0.0, 1e-7, -65504.0]);

/** Builds a version-1.0 .npy file with the given header dict text and payload. */
function npyWithHeader(dict, payload = Buffer.alloc(0), version = [1, 0]) {
  const prefix = version[0] === 1 ? 10 : 12;
  let header = dict;
  const total = Math.ceil((prefix + header.length + 1) / 64) * 64;
  header = header + ' '.repeat(total - prefix - header.length - 1) + '\n';
  const head = Buffer.alloc(prefix);
  Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, version[0], version[1]]).copy(head);
  if (prefix === 10) head.writeUInt16LE(header.length, 8);
  else head.writeUInt32LE(header.length, 8);
  return Buffer.concat([head, Buffer.from(header, 'latin1'), payload]);
}

function throwsInput(t, fn, re, msg) {
  try {
    fn();
    t.fail(`${msg}: did not throw`);
  } catch (err) {
    t.ok(err instanceof InputError, `${msg}: InputError`);
    t.equal(err.code, 'EVIT_BAD_INPUT', `${msg}: code`);
    t.match(err.message, re, `${msg}: message ${JSON.stringify(err.message)}`);
  }
}

test('round trip through serializeNpy / parseNpy', (t) => {
  for (const shape of [[2, 3], [1, 3, 4, 5], [7], [], [0, 4]]) {
    const n = shape.reduce((a, d) => a * d, 1);
    const data = Float32Array.from({ length: n }, (_, i) => (i - 3) * 0.37);
    const buf = serializeNpy(data, shape);
    t.equal(buf.readUInt16LE(8) + 10, buf.length - n * 4, `header length field, shape [${shape}]`);
    t.equal((buf.length - n * 4) % 64, 0, `data starts at a multiple of 64, shape [${shape}]`);
    const back = parseNpy(buf);
    t.deepEqual(back.shape, shape, `shape [${shape}]`);
    t.deepEqual(Array.from(back.data), Array.from(data), `data [${shape}]`);
  }
  t.end();
});

test('serializeNpy writes the same bytes as numpy', (t) => {
  const ours = serializeNpy(EXPECTED_2x3, [2, 3]);
  const theirs = fs.readFileSync(path.join(FIX, 'f32_2x3.npy'));
  t.ok(ours.equals(theirs), 'byte-identical to np.save of the same float32 [2, 3] array');
  t.end();
});

test('readNpy reads files written by numpy', async (t) => {
  const a = await readNpy(path.join(FIX, 'f32_2x3.npy'));
  t.deepEqual(a.shape, [2, 3], 'float32 [2, 3] shape');
  t.ok(a.data instanceof Float32Array, 'Float32Array');
  t.deepEqual(Array.from(a.data), Array.from(EXPECTED_2x3), 'float32 [2, 3] values');

  const s = await readNpy(path.join(FIX, 'f32_scalar.npy'));
  t.deepEqual(s.shape, [], '0-d array has shape []');
  t.deepEqual(Array.from(s.data), [7.5], '0-d array value');

  const e = await readNpy(path.join(FIX, 'f32_empty.npy'));
  t.deepEqual(e.shape, [0, 4], 'empty array shape');
  t.equal(e.data.length, 0, 'empty array data');

  const v2 = await readNpy(path.join(FIX, 'f32_v2.npy'));
  t.deepEqual(v2.shape, [5], 'format 2.0 (u32 header length) shape');
  t.deepEqual(Array.from(v2.data), [0, 1, 2, 3, 4], 'format 2.0 values');
});

test('rejects dtypes other than little-endian float32', async (t) => {
  for (const [file, re] of [
    ['f64_2x3.npy', /f64_2x3\.npy.*expected float32 \('<f4'\), got '<f8'/],
    ['f32be_2x3.npy', /f32be_2x3\.npy.*expected float32 \('<f4'\), got '>f4'.*big-endian/],
  ]) {
    try {
      await readNpy(path.join(FIX, file));
      t.fail(`${file}: did not throw`);
    } catch (err) {
      t.ok(err instanceof InputError, `${file}: InputError`);
      t.match(err.message, re, `${file}: ${err.message}`);
    }
  }
  throwsInput(t, () => parseNpy(npyWithHeader("{'descr': '|u1', 'fortran_order': False, 'shape': (2,), }", Buffer.alloc(2))),
    /got '\|u1'/, 'uint8');
  throwsInput(t, () => parseNpy(npyWithHeader("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }", Buffer.alloc(8))),
    /structured dtype/, 'structured dtype');
});

test('rejects fortran-order arrays', async (t) => {
  try {
    await readNpy(path.join(FIX, 'fortran_2x3.npy'));
    t.fail('did not throw');
  } catch (err) {
    t.ok(err instanceof InputError, 'InputError');
    t.match(err.message, /fortran_2x3\.npy.*fortran_order=True/, err.message);
  }
});

test('rejects bad magic, versions and truncation', (t) => {
  const good = serializeNpy(EXPECTED_2x3, [2, 3]);
  const badMagic = Buffer.from(good);
  badMagic[1] = 0x4d;
  throwsInput(t, () => parseNpy(badMagic, 'x.npy'), /^x\.npy: not a \.npy file/, 'bad magic');
  throwsInput(t, () => parseNpy(Buffer.from('hello')), /<buffer>: not a \.npy file/, 'too short');
  const badVersion = Buffer.from(good);
  badVersion[6] = 4;
  throwsInput(t, () => parseNpy(badVersion), /version 4\.0/, 'unknown version');
  throwsInput(t, () => parseNpy(good.subarray(0, good.length - 1)),
    /truncated data: shape \(2, 3\) needs 24 bytes of float32, found 23/, 'truncated data');
  throwsInput(t, () => parseNpy(good.subarray(0, 40)), /truncated \.npy header/, 'truncated header');
  throwsInput(t, () => parseNpy(Buffer.concat([good, Buffer.alloc(4)])),
    /data length mismatch: .* needs 24 bytes of float32, found 28/, 'trailing bytes');
  t.end();
});

test('rejects malformed headers without evaluating them', (t) => {
  const payload = Buffer.alloc(24);
  const cases = [
    ["{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)", /malformed .npy header/, 'unterminated dict'],
    ["{'descr': '<f4', 'fortran_order': False}", /expected keys descr, fortran_order, shape/, 'missing shape'],
    ["{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), 'x': 1}", /expected keys/, 'extra key'],
    ["{'descr': '<f4', 'fortran_order': 0, 'shape': (2, 3), }", /fortran_order is not True\/False/, 'fortran_order not bool'],
    ["{'descr': '<f4', 'fortran_order': False, 'shape': (2, -3), }", /shape must be a tuple of non-negative integers/, 'negative dim'],
    ["{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3.5), }", /malformed/, 'float dim'],
    ["{'descr': '<f4', 'fortran_order': False, 'shape': __import__('os'), }", /malformed .npy header: unexpected token/, 'code in header'],
    ["[1, 2, 3]", /not a dict/, 'not a dict'],
    ["{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", /duplicate key/, 'duplicate key'],
  ];
  for (const [dict, re, msg] of cases) throwsInput(t, () => parseNpy(npyWithHeader(dict, payload)), re, msg);
  // Old numpy under Python 2 wrote long integers with an L suffix.
  const py2 = parseNpy(npyWithHeader("{'descr': '<f4', 'fortran_order': False, 'shape': (2L, 3L), }", payload));
  t.deepEqual(py2.shape, [2, 3], 'accepts Python 2 long suffix');
  const dq = parseNpy(npyWithHeader('{"descr": "<f4", "fortran_order": False, "shape": (6,)}', payload, [3, 0]));
  t.deepEqual(dq.shape, [6], 'format 3.0, double quotes, no trailing comma');
  t.end();
});

test('unaligned payloads are copied into an aligned Float32Array', (t) => {
  const file = serializeNpy(EXPECTED_2x3, [2, 3]);
  const backing = Buffer.alloc(file.length + 1);
  file.copy(backing, 1);
  const view = backing.subarray(1);
  const a = parseNpy(view);
  t.equal(a.data.byteOffset % 4, 0, 'aligned');
  t.deepEqual(Array.from(a.data), Array.from(EXPECTED_2x3), 'values intact');

  const aligned = parseNpy(file);
  t.equal(aligned.data.buffer, file.buffer, 'aligned payload is a zero-copy view');
  t.end();
});

test('serializeNpy validates its arguments', (t) => {
  throwsInput(t, () => serializeNpy(new Float32Array(5), [2, 3]), /holds 6 elements but data has 5/, 'count mismatch');
  throwsInput(t, () => serializeNpy(new Float32Array(6), [2, -3]), /non-negative integers/, 'negative dim');
  throwsInput(t, () => serializeNpy(new Float64Array(6), [2, 3]), /Float32Array/, 'wrong array type');
  t.end();
});

test('readNpy names a missing file', async (t) => {
  const missing = path.join(os.tmpdir(), `evit-missing-${process.pid}.npy`);
  try {
    await readNpy(missing);
    t.fail('did not throw');
  } catch (err) {
    t.ok(err instanceof InputError, 'InputError');
    t.ok(err.message.includes(missing), err.message);
    t.equal(err.cause && err.cause.code, 'ENOENT', 'cause is the fs error');
  }
});
