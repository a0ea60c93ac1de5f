'use strict';
// Checkpoint and option parsers against crafted files: each must fail fast with a typed error
// naming what is wrong, in bounded time and memory, never with a RangeError or a stack overflow.
// Every hostile file is generated here; none is committed.
const test = require('tape');
const { parseCheckpoint } = require('../dist/weights/checkpoint');
const { parseSafetensors, WeightsError } = require('../dist');
const { checkpointDefaults } = require('../dist/weights/metadata');
const { jsonNestingDepth } = require('../dist/jsonDepth');
const h = require('./helpers/torchArchive');

/** Awaits fn and checks it throws `Class` with every pattern, within `ms` and `mib` MiB of new heap. */
async function refuses(t, fn, Class, patterns, label, { ms = 2000, mib = 200 } = {}) {
  const heap0 = process.memoryUsage().heapUsed + process.memoryUsage().arrayBuffers;
  const t0 = performance.now();
  let err = null;
  try {
    await fn();
  } catch (e) {
    err = e;
  }
  const took = performance.now() - t0;
  const grew = (process.memoryUsage().heapUsed + process.memoryUsage().arrayBuffers - heap0) / 2 ** 20;
  t.ok(err instanceof Class, `${label}: ${Class.name}${err && !(err instanceof Class) ? ` (got ${err.stack})` : err ? `: ${err.message}` : ' (no error)'}`);
  for (const re of patterns) t.match(err ? err.message : '', re, `${label}: names ${re}`);
  t.ok(took < ms, `${label}: fails in ${took.toFixed(0)} ms (< ${ms})`);
  t.ok(grew < mib, `${label}: ${grew.toFixed(0)} MiB allocated on the way (< ${mib})`);
}

const storage = (key, numel) => ({ key, numel });
/** Bytes that deflate about 75:1, under the per-entry ratio a single entry may claim (100:1). */
function sparseNoise(bytes, seed = 1) {
  const b = Buffer.alloc(bytes);
  for (let i = 0; i < b.length; i += 256) {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    b[i] = seed >>> 24;
  }
  return b;
}
const f32tensor = (key, n) => h.tensor(storage(key, n), 0, [n], [1]);

test('zip entries that share one deflate stream are refused before anything inflates', async (t) => {
  // One ~0.9 MB deflate stream that inflates to 64 MiB, and 20 directory entries naming it.
  const zeros = sparseNoise(64 << 20);
  const entries = {};
  const aliases = {};
  for (let i = 0; i < 20; i++) {
    entries[`w${i}`] = f32tensor(i === 0 ? 'big' : `a${i}`, zeros.length / 4);
    if (i > 0) aliases[`data/a${i}`] = 'data/big';
  }
  const file = h.zip({ 'data.pkl': h.stateDictPickle(entries), 'data/big': zeros }, { deflate: ['data/big'], aliases });
  t.ok(file.length < 1 << 20, `the archive is ${(file.length / 1024).toFixed(0)} KiB`);
  await refuses(t, () => parseCheckpoint(file, 'bomb.pth'), WeightsError, [/bomb\.pth/, /overlap/], 'overlapping entries');
});

test('deflated entries may not claim more in all than a bounded multiple of the file', async (t) => {
  // Each entry on its own stays under the per-entry ratio; together they claim 160 MiB from 2 MB.
  const files = { 'data.pkl': h.stateDictPickle({}) };
  const deflate = [];
  for (let i = 0; i < 40; i++) {
    files[`data/s${i}`] = sparseNoise(4 << 20, i + 1);
    deflate.push(`data/s${i}`);
  }
  const file = h.zip(files, { deflate });
  await refuses(t, () => parseCheckpoint(file, 'many.pth'), WeightsError, [/many\.pth/, /claim \d+ bytes in all/], 'total inflation');
});

test('a tensor is inflated only when its data is read', async (t) => {
  // The state dict names a deflated storage whose CRC is wrong: listing shapes must not touch it.
  const good = h.f32(1, 2, 3, 4);
  const bad = Buffer.alloc(4096, 7);
  const file = h.zip(
    { 'data.pkl': h.stateDictPickle({ used: f32tensor('0', 4), unused: f32tensor('1', 1024) }), 'data/0': good, 'data/1': bad },
    { deflate: ['data/1'], badCrc: ['data/1'] },
  );
  const ck = await parseCheckpoint(file, 'lazy.pth');
  t.deepEqual(ck.tensors.get('unused').shape, [1024], 'the shape of the damaged tensor is known without reading it');
  t.deepEqual(Array.from(ck.tensors.get('used').data), [1, 2, 3, 4], 'the tensor that is read decodes');
  t.throws(() => ck.tensors.get('unused').data, /lazy\.pth: zip entry archive\/data\/1 fails its CRC-32 check/,
    'the damaged one fails, with a WeightsError, when it is read');
});

test('pickles that build huge values are refused quickly with a WeightsError', async (t) => {
  const { op, pickle, stateDictPickle } = h;
  const wrap = (pkl) => h.zip({ 'data.pkl': pkl });
  // A set filled by one ADDITEMS of 300k items: fine as a value (no RangeError), not a checkpoint.
  const items = Buffer.alloc(300_000, 0x88); // NEWTRUE × 300k
  await refuses(t, () => parseCheckpoint(wrap(pickle(op.PROTO, 2, 0x8f, op.MARK, items, 0x90, op.STOP)), 'set.pth'),
    WeightsError, [/set\.pth/, /not a dict/], 'ADDITEMS of 300k items');
  // Two million memo entries (MEMOIZE of one value).
  const memo = Buffer.alloc(2_000_000, 0x94);
  await refuses(t, () => parseCheckpoint(wrap(pickle(op.PROTO, 4, op.NONE, memo, op.STOP)), 'memo.pth'),
    WeightsError, [/memo\.pth/, /memo holds more than \d+ entries/], 'a memo of 2M entries');
  // MARKs nested a million deep.
  await refuses(t, () => parseCheckpoint(wrap(pickle(op.PROTO, 2, Buffer.alloc(1_000_000, op.MARK), op.STOP)), 'marks.pth'),
    WeightsError, [/marks\.pth/, /MARKs nested deeper than/], 'MARKs nested 1M deep');
  // Five million opcodes that each push a value.
  await refuses(t, () => parseCheckpoint(wrap(pickle(op.PROTO, 2, Buffer.alloc(5_000_000, op.NONE), op.STOP)), 'long.pth'),
    WeightsError, [/long\.pth/, /more than \d+ opcodes/], 'five million opcodes');
  t.ok(stateDictPickle, 'helpers loaded');
});

test('a safetensors header nested a million levels deep is refused without parsing it', async (t) => {
  const depth = 1_000_000;
  const text = '{"a":' + '['.repeat(depth) + ']'.repeat(depth) + '}';
  const hdr = Buffer.from(text);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(hdr.length));
  await refuses(t, () => parseSafetensors(Buffer.concat([len, hdr]), 'deep.safetensors'), WeightsError,
    [/deep\.safetensors/, /nests JSON deeper than a safetensors header/], 'nested header', { ms: 1000 });
  t.equal(jsonNestingDepth('{"s": "[[[[{{{{", "a": [1, [2]]}', 10), 3, 'brackets inside strings do not count');
  t.equal(jsonNestingDepth('"\\"[[["', 10), 0, 'an escaped quote does not end a string');
});

test('numbers in checkpoint metadata are plain decimals: 0x1, 1e, Infinity and blanks are refused', (t) => {
  for (const bad of ['0x1', '0b1', '0o7', 'Infinity', '1e', ' ', '', '0.7.1', '.', '+']) {
    t.throws(() => checkpointDefaults({ 'evit.keep_rate': bad }, 'm.safetensors'),
      (e) => e instanceof WeightsError && /__metadata__ "evit\.keep_rate" must be a decimal number/.test(e.message), JSON.stringify(bad));
  }
  for (const [good, v] of [['0.7', 0.7], [' 0.5 ', 0.5], ['1', 1], ['7e-1', 0.7], ['.25', 0.25]])
    t.equal(checkpointDefaults({ 'evit.keep_rate': good }, 'm').keepRate, v, `${JSON.stringify(good)} is ${v}`);
  t.end();
});

test('numeric CLI options are plain decimals too', (t) => {
  const { spawnSync } = require('node:child_process');
  const path = require('node:path');
  const cli = path.join(__dirname, '..', 'dist', 'cli.js');
  const example = path.join(__dirname, '..', 'examples', 'sneaker.png');
  for (const bad of ['0x1', '1e', 'Infinity']) {
    const r = spawnSync(process.execPath, [cli, 'classify', '--keep-rate', bad, example], { encoding: 'utf8' });
    t.equal(r.status, 2, `--keep-rate ${bad}: usage error (exit 2)`);
    t.match(r.stderr, new RegExp(`--keep-rate must be a number \\(decimal, like 0\\.7\\), got "${bad}"`), `--keep-rate ${bad}: says why`);
  }
  t.end();
});

test('loadModel inflates only the tensors the model reads: a damaged extra tensor does not stop it', async (t) => {
  const fs = require('node:fs');
  const os = require('node:os');
  const path = require('node:path');
  const { loadModel, readSafetensors } = require('../dist');
  const golden = require('./fixtures/pth/golden.json');
  const twin = path.join(__dirname, 'fixtures', 'pth', 'deit-mini.safetensors');
  const { tensors } = await readSafetensors(twin);
  const entries = {};
  const files = {};
  let key = 0;
  for (const [name, tt] of tensors) {
    const strides = tt.shape.map((_, i) => tt.shape.slice(i + 1).reduce((a, b) => a * b, 1));
    entries[name] = h.tensor({ key: String(key), numel: tt.data.length }, 0, tt.shape, strides);
    files[`data/${key++}`] = Buffer.from(tt.data.buffer, tt.data.byteOffset, tt.data.byteLength);
  }
  // A tensor the model never reads, deflated and with a wrong CRC: loading must not inflate it.
  entries['extra.never_read'] = f32tensor(String(key), 4096);
  files[`data/${key}`] = sparseNoise(4096 * 4);
  const file = path.join(os.tmpdir(), `evit-lazy-${process.pid}.pth`);
  fs.writeFileSync(file, h.zip({ 'data.pkl': h.stateDictPickle(entries), ...files }, { deflate: [`data/${key}`], badCrc: [`data/${key}`] }));
  try {
    const opts = { numHeads: golden.model.numHeads, card: false, dropLoc: [1, 2] };
    const fromPth = await loadModel(file, opts);
    const fromSt = await loadModel(twin, opts);
    const input = { data: new Float32Array(3 * fromSt.imgSize ** 2).fill(0.3), shape: [1, 3, fromSt.imgSize, fromSt.imgSize] };
    const [a, b] = await Promise.all([fromPth.forward(input), fromSt.forward(input)]);
    t.deepEqual(Array.from(a.logits), Array.from(b.logits), 'the model loads and matches its safetensors twin');
    fromPth.dispose();
    fromSt.dispose();
  } finally {
    fs.rmSync(file, { force: true });
  }
});

test('evit convert never replaces its input under another name, nor a FIFO or directory at OUT', (t) => {
  const fs = require('node:fs');
  const os = require('node:os');
  const path = require('node:path');
  const { spawnSync } = require('node:child_process');
  const cli = path.join(__dirname, '..', 'dist', 'cli.js');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'evit-convert-hostile-'));
  const orig = path.join(dir, 'orig.pth');
  fs.copyFileSync(path.join(__dirname, 'fixtures', 'pth', 'deit-mini.pth'), orig);
  const before = fs.readFileSync(orig);
  const run = (...args) => spawnSync(process.execPath, [cli, 'convert', ...args], { encoding: 'utf8' });
  try {
    fs.symlinkSync(orig, path.join(dir, 'alias.pth'));
    fs.linkSync(orig, path.join(dir, 'hard.pth'));
    for (const [label, input, output] of [
      ['a symlink to OUT as IN', path.join(dir, 'alias.pth'), orig],
      ['IN written through a symlink OUT', orig, path.join(dir, 'alias.pth')],
      ['a hard link of IN as OUT', orig, path.join(dir, 'hard.pth')],
      ['the same file by a relative path', orig, path.relative(process.cwd(), orig)],
    ]) {
      const r = run(input, output, '--dtype', 'f16');
      t.equal(r.status, 2, `${label}: usage error`);
      t.match(r.stderr, /would overwrite its input/, `${label}: says why`);
    }
    t.ok(fs.readFileSync(orig).equals(before), 'the original is untouched');
    t.ok(fs.lstatSync(path.join(dir, 'alias.pth')).isSymbolicLink(), 'the symlink is still a symlink');

    const fifo = path.join(dir, 'pipe');
    const mk = spawnSync('mkfifo', [fifo]);
    if (mk.status === 0) {
      const r = run(orig, fifo);
      t.equal(r.status, 2, 'a FIFO at OUT: usage error');
      t.match(r.stderr, /exists and is a FIFO/, 'a FIFO at OUT: says why');
      t.ok(fs.lstatSync(fifo).isFIFO(), 'the FIFO is still a FIFO');
    } else {
      t.fail(`mkfifo is needed for this check: ${mk.error?.message ?? mk.stderr}`);
    }
    fs.mkdirSync(path.join(dir, 'adir'));
    const r = run(orig, path.join(dir, 'adir'));
    t.equal(r.status, 2, 'a directory at OUT: usage error');
    t.match(r.stderr, /exists and is a directory/);

    // A regular OUT reached through a symlink is written where the link points; the link stays.
    fs.writeFileSync(path.join(dir, 'target.safetensors'), 'old');
    fs.symlinkSync(path.join(dir, 'target.safetensors'), path.join(dir, 'link.safetensors'));
    const ok = run(orig, path.join(dir, 'link.safetensors'));
    t.equal(ok.status, 0, ok.stderr);
    t.ok(fs.lstatSync(path.join(dir, 'link.safetensors')).isSymbolicLink(), 'the link is kept');
    t.ok(fs.statSync(path.join(dir, 'target.safetensors')).size > 1000, 'the file it points to holds the result');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  t.end();
});
