'use strict';
// Public API behaviour: loading, forward, classify, lifetimes, and every bad input as a typed error.
const test = require('tape');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const sharp = require('sharp');
const evit = require('../dist');
const { loadBinding } = require('../dist/native');
const { fixture, golden, tinyModel, tinyOptions } = require('./helpers/fixtures');

const { loadModel, readNpy, parseSafetensors, serializeSafetensors } = evit;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'evit-model-test-'));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));

const original = fs.readFileSync(tinyModel);
const headerLen = Number(original.readBigUInt64LE(0));
const header = JSON.parse(original.subarray(8, 8 + headerLen).toString('utf8'));

function writeTmp(name, buf) {
  const file = path.join(tmp, name);
  fs.writeFileSync(file, buf);
  return file;
}

/** The fixture with its JSON header edited (data section unchanged). */
function withHeader(edit) {
  const h = structuredClone(header);
  edit(h);
  let json = Buffer.from(JSON.stringify(h));
  const pad = (8 - (json.length % 8)) % 8;
  json = Buffer.concat([json, Buffer.alloc(pad, 0x20)]);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  return Buffer.concat([len, json, original.subarray(8 + headerLen)]);
}

/** The fixture re-serialised with one tensor replaced or removed. */
function withTensors(edit) {
  const { tensors } = parseSafetensors(original);
  const out = new Map();
  for (const [name, t] of tensors) out.set(name, { dtype: 'F32', shape: t.shape, data: t.data });
  edit(out);
  return serializeSafetensors(out);
}

async function rejects(t, promise, Cls, code, re, what) {
  try {
    await promise;
    t.fail(`${what}: resolved`);
  } catch (err) {
    t.ok(err instanceof Cls, `${what}: ${Cls.name} (got ${err && err.constructor && err.constructor.name})`);
    t.equal(err.code, code, `${what}: code ${code}`);
    t.match(String(err.message), re, `${what}: ${err.message}`);
  }
}

test('loadModel reports the architecture, schedule and backend', async (t) => {
  const model = await loadModel(tinyModel, tinyOptions);
  t.deepEqual(
    { ...model.architecture },
    { embedDim: 48, depth: 12, numHeads: 3, patchSize: 16, inChans: 3, gridSize: [14, 14], numClasses: 10, mlpHidden: 192, arch: null },
  );
  t.equal(model.imgSize, 224);
  t.equal(model.backend, 'cpu');
  t.deepEqual([3, 6, 9].map((b) => model.schedule.tokenCounts[b]), [139, 99, 71], 'default keep 0.7 fused');
  t.equal(model.disposed, false);
  model.dispose();
  t.equal(model.disposed, true);
});

test('F16 and BF16 checkpoints load and agree with F32 within their precision', async (t) => {
  const input = await readNpy(fixture('input-224.npy'));
  const dense = golden.cases.find((c) => c.name === 'dense').logits.flat();
  for (const [dtype, tol] of [['F16', 0.05], ['BF16', 0.5]]) {
    const { tensors } = parseSafetensors(original);
    const out = new Map();
    for (const [name, tt] of tensors) out.set(name, { dtype, shape: tt.shape, data: tt.data });
    const file = writeTmp(`tiny-${dtype}.safetensors`, serializeSafetensors(out));
    const model = await loadModel(file, { ...tinyOptions, keepRate: 1 });
    const res = await model.forward(input);
    const maxDiff = Math.max(...dense.map((v, i) => Math.abs(v - res.logits[i])));
    t.ok(maxDiff < tol, `${dtype}: max logit diff ${maxDiff.toExponential(2)} < ${tol}`);
    t.ok(maxDiff > 0, `${dtype}: weights were really rounded`);
    model.dispose();
  }
});

test('forward overrides the schedule per call', async (t) => {
  const model = await loadModel(tinyModel, { ...tinyOptions, keepRate: 0.7 });
  const input = await readNpy(fixture('input-224.npy'));
  const a = await model.forward(input, { keepRate: 0.5, fuse: false });
  t.deepEqual(a.kept.map((k) => k.shape[1]), [98, 49, 25]);
  const b = await model.forward(input, { keepRate: 1 });
  t.deepEqual(b.kept, [], 'dense has no reorganising blocks');
  const c = await model.forward(input, { dropLoc: [0], keepCounts: [1] });
  t.deepEqual(c.kept.map((k) => k.shape[1]), [2], 'k = 1 plus the fused token');
  const d = await model.forward(input, { dropLoc: [11], keepCounts: [195], fuse: false });
  t.deepEqual(d.kept.map((k) => k.shape[1]), [195], 'k = N - 2 at the last block');
  t.ok(d.logits.every(Number.isFinite));
  model.dispose();
});

test('classify: images, Buffers and .npy batches, in input order', async (t) => {
  const model = await loadModel(tinyModel, tinyOptions);
  const png = await sharp({ create: { width: 300, height: 200, channels: 3, background: { r: 200, g: 40, b: 90 } } }).png().toBuffer();
  const file = writeTmp('red.png', png);
  const res = await model.classify([file, fixture('input-224.npy'), png], { top: 3 });
  t.deepEqual(res.map((r) => r.input), [file, `${fixture('input-224.npy')}[0]`, `${fixture('input-224.npy')}[1]`, '<buffer ' + png.length + ' bytes>']);
  for (const r of res) {
    t.equal(r.logits.length, 10);
    t.equal(r.top.length, 3);
    t.ok(r.top[0].prob >= r.top[1].prob && r.top[1].prob >= r.top[2].prob, 'top sorted by probability');
    t.equal(r.top[0].index, r.logits.indexOf(Math.max(...r.logits)), 'top-1 is the arg max');
    t.deepEqual(r.kept.map((k) => [k.block, k.tokens.length]), [[3, 139], [6, 99], [9, 71]]);
  }
  const same = Math.max(...res[0].logits.map((v, i) => Math.abs(v - res[3].logits[i])));
  t.ok(same < 1e-5, `the same image as a file and a Buffer (diff ${same.toExponential(2)})`);
  const npyGolden = golden.cases.find((c) => c.name === 'keep0.7-fused').logits;
  const diff = Math.max(...npyGolden[1].map((v, i) => Math.abs(v - res[2].logits[i])));
  t.ok(diff < 1e-4, `.npy rows go through unchanged (diff ${diff.toExponential(2)})`);
  const sum = (await model.classify(png, { top: 10 }))[0].top.reduce((a, b) => a + b.prob, 0);
  t.ok(Math.abs(sum - 1) < 1e-9, 'probabilities over all classes sum to 1');
  model.dispose();
});

test('labels are reported with the top classes', async (t) => {
  const labels = ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j'];
  const model = await loadModel(tinyModel, { ...tinyOptions, labels });
  const [r] = await model.classify(fixture('input-224.npy'), { top: 2 });
  t.equal(r.top[0].label, labels[r.top[0].index]);
  model.dispose();
});

test('bad checkpoints give WeightsError', async (t) => {
  const cases = [
    ['truncated file', original.subarray(0, original.length - 1000), /truncat|past the end|out of range|exceed/i],
    ['fewer than 8 bytes', original.subarray(0, 5), /8 bytes|too short|truncat/i],
    ['header length past the end', (() => { const b = Buffer.from(original); b.writeBigUInt64LE(BigInt(b.length)); return b; })(), /header/i],
    ['offsets out of range', withHeader((h) => { h['head.bias'].data_offsets = [original.length, original.length + 40]; }), /head\.bias/],
    ['overlapping offsets', withHeader((h) => { h['head.bias'].data_offsets = h['norm.bias'].data_offsets.slice(); h['head.bias'].shape = [48]; }), /overlap/i],
    ['unknown dtype', withHeader((h) => { h['head.bias'].dtype = 'Q7'; }), /Q7/],
    ['unsupported dtype', withHeader((h) => { h['head.bias'].dtype = 'I64'; h['head.bias'].data_offsets[1] = h['head.bias'].data_offsets[0] + 80; }), /I64/],
    ['missing tensor', withTensors((m) => m.delete('blocks.3.attn.qkv.bias')), /blocks\.3\.attn\.qkv\.bias/],
    ['wrong shape', withTensors((m) => m.set('blocks.2.mlp.fc1.weight', { dtype: 'F32', shape: [191, 48], data: new Float32Array(191 * 48) })), /blocks\.2\.mlp\.fc1\.weight.*\[191,48\]/],
    ['not safetensors at all', Buffer.from('this is not a checkpoint, just some text that is long enough'), /header|JSON|safetensors/i],
  ];
  for (const [what, buf, re] of cases) {
    const file = writeTmp(`${what.replace(/\W+/g, '-')}.safetensors`, buf);
    await rejects(t, loadModel(file, tinyOptions), evit.WeightsError, 'EVIT_BAD_WEIGHTS', re, what);
  }
  await rejects(t, loadModel(path.join(tmp, 'absent.safetensors'), tinyOptions), evit.WeightsError, 'EVIT_BAD_WEIGHTS', /not found/, 'missing file');
});

test('bad options give OptionsError', async (t) => {
  const cases = [
    ['keepRate 0', { keepRate: 0 }, /keepRate/],
    ['keepRate > 1', { keepRate: 1.5 }, /keepRate/],
    ['keepRate negative', { keepRate: -0.1 }, /keepRate/],
    ['dropLoc out of range', { dropLoc: [3, 12] }, /dropLoc entry 12/],
    ['imgSize not a multiple of the patch', { imgSize: 230 }, /imgSize/],
    ['unknown arch', { arch: 'deit_huge', numHeads: undefined }, /deit_huge/],
    ['heads not dividing', { numHeads: 5 }, /5/],
    ['device', { device: 'tpu' }, /device/],
    ['threads', { threads: 0 }, /threads/],
  ];
  for (const [what, opts, re] of cases)
    await rejects(t, loadModel(tinyModel, { ...tinyOptions, ...opts }), evit.OptionsError, 'EVIT_BAD_OPTIONS', re, what);
  await rejects(t, loadModel(tinyModel, {}), evit.OptionsError, 'EVIT_BAD_OPTIONS', /numHeads/, 'no way to know the heads');
});

test('bad inputs give InputError', async (t) => {
  const model = await loadModel(tinyModel, tinyOptions);
  const good = await readNpy(fixture('input-224.npy'));
  const cases = [
    ['wrong dtype', { data: new Float64Array(good.data), shape: good.shape }, /Float32Array, got Float64Array/],
    ['plain array', { data: Array.from(good.data.subarray(0, 10)), shape: good.shape }, /Float32Array/],
    ['wrong rank', { data: good.data, shape: [2, 3, 224 * 224] }, /\[batch, channels, height, width\]/],
    ['wrong size', { data: good.data.subarray(0, 3 * 256 * 256), shape: [1, 3, 256, 256] }, /expected \[batch, 3, 224, 224\]/],
    ['wrong channels', { data: good.data.subarray(0, 224 * 224), shape: [1, 1, 224, 224] }, /expected \[batch, 3, 224, 224\]/],
    ['length mismatch', { data: good.data.subarray(0, 1000), shape: [1, 3, 224, 224] }, /1000 elements/],
    ['zero batch', { data: new Float32Array(0), shape: [0, 3, 224, 224] }, /positive integers/],
    ['not an object', null, /must be \{data, shape\}/],
  ];
  for (const [what, input, re] of cases) await rejects(t, model.forward(input), evit.InputError, 'EVIT_BAD_INPUT', re, what);

  const notImage = writeTmp('notes.png', 'these bytes are not a PNG');
  await rejects(t, model.classify(notImage), evit.InputError, 'EVIT_BAD_INPUT', /notes\.png/, 'a file that is not an image');
  const png = await sharp({ create: { width: 64, height: 64, channels: 3, background: '#888' } }).png().toBuffer();
  await rejects(t, model.classify(png.subarray(0, 40)), evit.InputError, 'EVIT_BAD_INPUT', /buffer/, 'truncated image');
  await rejects(t, model.classify(path.join(tmp, 'missing.jpg')), evit.InputError, 'EVIT_BAD_INPUT', /missing\.jpg/, 'missing image');
  await rejects(t, model.classify([]), evit.InputError, 'EVIT_BAD_INPUT', /at least one/, 'no inputs');
  await rejects(t, model.classify(fixture('input-256.npy')), evit.InputError, 'EVIT_BAD_INPUT', /expected \[batch, 3, 224, 224\]/, '.npy of the wrong size');
  await rejects(t, model.forward(good, { keepRate: 2 }), evit.OptionsError, 'EVIT_BAD_OPTIONS', /keepRate/, 'per-call keepRate');
  await rejects(t, model.classify(png, { top: 0 }), evit.OptionsError, 'EVIT_BAD_OPTIONS', /top/, 'top 0');
  model.dispose();
});

test('dispose: later calls throw DisposedError, running batches finish', async (t) => {
  const model = await loadModel(tinyModel, tinyOptions);
  const input = await readNpy(fixture('input-224.npy'));
  const running = model.forward(input);
  model.dispose();
  const res = await running;
  t.equal(res.logits.length, 20, 'a batch started before dispose completes');
  const expected = golden.cases.find((c) => c.name === 'keep0.7-fused').logits.flat();
  t.ok(Math.max(...expected.map((v, i) => Math.abs(v - res.logits[i]))) < 1e-4, 'and its result is right');
  await rejects(t, model.forward(input), evit.DisposedError, 'EVIT_DISPOSED', /disposed/, 'forward after dispose');
  await rejects(t, model.classify(fixture('input-224.npy')), evit.DisposedError, 'EVIT_DISPOSED', /disposed/, 'classify after dispose');
  t.doesNotThrow(() => model.dispose(), 'dispose twice is harmless');
});

test('Symbol.asyncDispose disposes', async (t) => {
  const model = await loadModel(tinyModel, tinyOptions);
  t.equal(typeof model[Symbol.asyncDispose], 'function');
  await model[Symbol.asyncDispose]();
  t.equal(model.disposed, true);
});

test('forward runs off the event loop and concurrent calls each get their own result', async (t) => {
  const model = await loadModel(tinyModel, tinyOptions);
  const input = await readNpy(fixture('input-224.npy'));
  let ticks = 0;
  const timer = setInterval(() => ticks++, 0);
  const schedules = [{ keepRate: 1 }, { keepRate: 0.7 }, { keepRate: 0.7, fuse: false }, { keepRate: 0.5 }];
  const results = await Promise.all(schedules.map((s) => model.forward(input, s)));
  clearInterval(timer);
  t.ok(ticks > 0, `the event loop ran ${ticks} timer callbacks while batches ran`);
  const names = ['dense', 'keep0.7-fused', 'keep0.7-nofuse', 'keep0.5-fused'];
  results.forEach((r, i) => {
    const want = golden.cases.find((c) => c.name === names[i]).logits.flat();
    const diff = Math.max(...want.map((v, j) => Math.abs(v - r.logits[j])));
    t.ok(diff < 1e-4, `${names[i]} got its own result (diff ${diff.toExponential(2)})`);
  });
  model.dispose();
});

test('pos_embed is resized for other input sizes', async (t) => {
  const model = await loadModel(tinyModel, { ...tinyOptions, imgSize: 128 });
  t.equal(model.imgSize, 128);
  t.equal(model.numPatches, 64);
  const out = await model.forward({ data: new Float32Array(3 * 128 * 128).fill(0.1), shape: [1, 3, 128, 128] });
  t.deepEqual(out.kept.map((k) => k.shape[1]), [46, 34, 25], 'ceil(0.7·64)=45+1, ceil(0.7·46)=33+1, ceil(0.7·34)=24+1');
  model.dispose();
});

test('the native binding validates what it is handed', (t) => {
  const { Model } = loadBinding();
  const { tensors } = parseSafetensors(original);
  const record = {};
  for (const [name, tt] of tensors) record[name] = tt.data;
  const config = { embedDim: 48, depth: 12, numHeads: 3, patchSize: 16, inChans: 3, gridH: 14, gridW: 14, numClasses: 10, mlpHidden: 192 };
  t.throws(() => new Model({ ...config, numHeads: 5 }, record), /numHeads \(5\) does not divide embedDim \(48\)/);
  t.throws(() => new Model({ ...config, depth: 0 }, record), /config\.depth/);
  t.throws(() => new Model({ ...config, depth: 1.5 }, record), /config\.depth must be an integer/);
  t.throws(() => new Model({ ...config, embedDim: undefined }, record), /config\.embedDim is required/);
  t.throws(() => new Model(config, { ...record, 'norm.bias': undefined }), /missing tensor norm\.bias|tensor norm\.bias must be a Float32Array/);
  const { 'head.bias': _drop, ...withoutHead } = record;
  t.throws(() => new Model(config, withoutHead), /missing tensor head\.bias/);
  t.throws(() => new Model(config, { ...record, 'head.bias': new Float32Array(9) }), /head\.bias has 9 elements, expected 10/);
  t.throws(() => new Model(config, { ...record, 'head.bias': new Float64Array(10) }), /head\.bias must be a Float32Array/);
  t.throws(() => new Model({ ...config, gridH: 15 }, record), /pos_embed has 9456 elements, expected 10128/);
  t.throws(() => Model(config, record), /new/, 'called without new');

  const m = new Model(config, record);
  const img = new Float32Array(3 * 224 * 224);
  const keep = new Int32Array(12).fill(-1);
  const fuse = new Uint8Array(12);
  t.throws(() => m.forward(img, 2, keep, fuse), /images has 150528 elements, expected 301056/);
  t.throws(() => m.forward(img, 0, keep, fuse), /batch must be an integer in \[1, 4096\]/);
  t.throws(() => m.forward(img, 1, new Int32Array(11), fuse), /keep has 11 elements, expected 12/);
  t.throws(() => m.forward(img, 1, keep, new Int32Array(12)), /fuse must be a Uint8Array/);
  const tooMany = keep.slice(); tooMany[3] = 196;
  t.throws(() => m.forward(img, 1, tooMany, fuse), /block 3 keeps 196 of 196 tokens/);
  const zero = keep.slice(); zero[0] = 0;
  t.throws(() => m.forward(img, 1, zero, fuse), /block 0 keeps 0 of 196/);
  m.dispose();
  t.throws(() => m.forward(img, 1, keep, fuse), /disposed/);
  t.end();
});

test('single-op calls on the JS thread while a forward pass runs do not disturb it', async (t) => {
  const { ops } = loadBinding().testing;
  const model = await loadModel(tinyModel, { ...tinyOptions, keepRate: 1 });
  const input = await readNpy(fixture('input-224.npy'));
  const running = model.forward(input);
  const x = new Float32Array(64 * 48).map((_, i) => Math.sin(i));
  const w = new Float32Array(48).fill(1);
  const b = new Float32Array(48);
  let calls = 0;
  const first = ops.layerNorm(x, 64, 48, w, b, 1e-6);
  for (let i = 0; i < 200; i++) {
    const again = ops.layerNorm(x, 64, 48, w, b, 1e-6);
    if (again.every((v, j) => v === first[j])) calls++;
  }
  const res = await running;
  t.equal(calls, 200, 'every op call gave the same result');
  const want = golden.cases.find((c) => c.name === 'dense').logits.flat();
  t.ok(Math.max(...want.map((v, i) => Math.abs(v - res.logits[i]))) < 1e-4, 'the pass is still right');
  model.dispose();
});

test('asking for a different thread count after the pool exists warns', async (t) => {
  const { backendInfo } = evit;
  const inEffect = backendInfo().cpu.threads;
  const warnings = [];
  const onWarning = (w) => warnings.push(w);
  process.on('warning', onWarning);
  const model = await loadModel(tinyModel, { ...tinyOptions, threads: inEffect + 1 });
  await new Promise((resolve) => setImmediate(resolve));
  process.off('warning', onWarning);
  t.equal(backendInfo().cpu.threads, inEffect, 'the pool keeps its size');
  t.ok(warnings.some((w) => w.code === 'EVIT_THREADS_FIXED'), 'an EVIT_THREADS_FIXED warning was emitted');
  model.dispose();
});

test('checkpoint metadata supplies the trained schedule and arch; options override it', async (t) => {
  const { tensors } = parseSafetensors(original);
  const m = new Map();
  for (const [name, tt] of tensors) m.set(name, { dtype: 'F32', shape: tt.shape, data: tt.data });
  const file = writeTmp('with-meta.safetensors', serializeSafetensors(m, { 'evit.keep_rate': '0.5', 'evit.drop_loc': '2, 5', 'evit.fuse': 'false' }));
  const model = await loadModel(file, tinyOptions);
  t.deepEqual(model.schedule.dropBlocks, [2, 5]);
  t.equal(model.schedule.keepRate, 0.5);
  t.equal(model.schedule.fused, false);
  model.dispose();
  const overridden = await loadModel(file, { ...tinyOptions, keepRate: 0.7, fuse: true, dropLoc: [3, 6, 9] });
  t.deepEqual([3, 6, 9].map((b) => overridden.schedule.tokenCounts[b]), [139, 99, 71], 'explicit options win');
  overridden.dispose();
  const counts = await loadModel(file, { ...tinyOptions, keepCounts: [100, 50] });
  t.deepEqual(counts.schedule.dropBlocks, [2, 5], 'keepCounts replace the stored keep rate, drop blocks still apply');
  counts.dispose();

  const bad = writeTmp('bad-meta.safetensors', serializeSafetensors(m, { 'evit.fuse': 'maybe' }));
  await rejects(t, loadModel(bad, tinyOptions), evit.WeightsError, 'EVIT_BAD_WEIGHTS', /evit\.fuse.*"maybe"/, 'bad evit.fuse');
  const badLoc = writeTmp('bad-loc.safetensors', serializeSafetensors(m, { 'evit.drop_loc': '3,x' }));
  await rejects(t, loadModel(badLoc, tinyOptions), evit.WeightsError, 'EVIT_BAD_WEIGHTS', /evit\.drop_loc/, 'bad evit.drop_loc');
  const archMeta = writeTmp('arch-meta.safetensors', serializeSafetensors(m, { arch: 'deit_small_patch16_224' }));
  await rejects(t, loadModel(archMeta, {}), evit.WeightsError, 'EVIT_BAD_WEIGHTS', /deit_small_patch16_224/, 'a stored arch that disagrees with the tensors');
});

test('non-finite inputs are refused; values that overflow inside the pass still run to completion with valid kept tokens', async (t) => {
  const model = await loadModel(tinyModel, { ...tinyOptions, keepRate: 0.5 });
  const data = new Float32Array(2 * 3 * 224 * 224);
  data.fill(NaN, 0, 3 * 224 * 224);
  await rejects(t, model.forward({ data, shape: [2, 3, 224, 224] }), evit.InputError, 'EVIT_BAD_INPUT', /non-finite/, 'NaN input');
  // Finite, but the patch embedding's sums overflow to infinity: NaN from there on.
  data.fill(3e38, 0, 3 * 224 * 224); // image 0: near FLT_MAX everywhere
  for (let i = 3 * 224 * 224; i < data.length; i++) data[i] = (i % 97) ? 0.1 : (i % 2 ? 3e38 : -3e38); // image 1: some
  const out = await model.forward({ data, shape: [2, 3, 224, 224] });
  t.equal(out.logits.length, 20);
  t.ok(out.logits.subarray(0, 10).every(Number.isNaN), 'overflow inside the pass: NaN logits out');
  for (const k of out.kept) {
    for (let b = 0; b < 2; b++) {
      const row = Array.from(k.tokens.subarray(b * k.shape[1], (b + 1) * k.shape[1]));
      t.equal(new Set(row).size, row.length, `block ${k.block} image ${b}: kept tokens are distinct`);
      t.ok(row.every((o) => (o >= 0 && o < 196) || o < 0), `block ${k.block} image ${b}: origins in range`);
    }
  }
  model.dispose();
});

test('the batch and thread limits are backendInfo().limits, the numbers the binding enforces', async (t) => {
  const { limits } = evit.backendInfo();
  for (const k of ['maxBatch', 'maxThreads', 'maxStreams']) t.ok(Number.isSafeInteger(limits[k]) && limits[k] > 0, `limits.${k} = ${limits[k]}`);
  // The binding itself refuses one more than each limit, so TypeScript and C++ agree on the numbers.
  const { Model } = loadBinding();
  const { tensors } = parseSafetensors(original);
  const record = {};
  for (const [name, tt] of tensors) record[name] = tt.data;
  const config = { embedDim: 48, depth: 12, numHeads: 3, patchSize: 16, inChans: 3, gridH: 14, gridW: 14, numClasses: 10, mlpHidden: 192 };
  const m = new Model(config, record);
  const keep = new Int32Array(12).fill(-1);
  t.throws(() => m.forward(new Float32Array(3 * 224 * 224), limits.maxBatch + 1, keep, new Uint8Array(12)),
    new RegExp(`batch must be an integer in \\[1, ${limits.maxBatch}\\]`), 'the binding: batch');
  m.dispose();
  t.throws(() => new Model(config, record, { threads: limits.maxThreads + 1 }),
    new RegExp(`options.threads must be an integer in \\[1, ${limits.maxThreads}\\]`), 'the binding: threads');

  // TypeScript refuses the same before the binding sees it, as user input.
  await rejects(t, loadModel(tinyModel, { ...tinyOptions, threads: limits.maxThreads + 1 }), evit.OptionsError, 'EVIT_BAD_OPTIONS',
    new RegExp(`^threads must be an integer from 1 to ${limits.maxThreads}, got ${limits.maxThreads + 1}$`), 'threads above the pool limit');
  const model = await loadModel(tinyModel, tinyOptions);
  await rejects(t, model.forward({ data: new Float32Array(10), shape: [limits.maxBatch + 1, 3, 224, 224] }), evit.InputError, 'EVIT_BAD_INPUT',
    new RegExp(`^input batch ${limits.maxBatch + 1} exceeds the maximum of ${limits.maxBatch}$`), 'forward: batch above the limit');
  // Counted before any image is read: these files do not exist, and that is not what is reported.
  const paths = Array.from({ length: limits.maxBatch + 1 }, (_, i) => path.join(tmp, `absent-${i}.png`));
  await rejects(t, model.classify(paths), evit.InputError, 'EVIT_BAD_INPUT',
    new RegExp(`^at most ${limits.maxBatch} images per call, got ${limits.maxBatch + 1}$`), 'classify: more images than one pass takes');
  model.dispose();
});

test('profile: the slots backendInfo().profileSlots names, per block with its token count', async (t) => {
  const { profileSlots } = evit.backendInfo();
  t.ok(profileSlots.model.length > 0 && profileSlots.block.length > 0, `model slots ${profileSlots.model}, block slots ${profileSlots.block}`);
  const model = await loadModel(tinyModel, tinyOptions);
  const input = await readNpy(fixture('input-224.npy'));
  const plain = await model.forward(input);
  const out = await model.forward(input, { profile: true });
  t.equal(plain.profile, undefined, 'no profile unless asked');
  t.deepEqual(Object.keys(out.profile), [...profileSlots.model, 'blocks'], 'the model slots, then the blocks');
  t.equal(out.profile.blocks.length, model.architecture.depth, 'one entry per block');
  let tokens = model.numPatches;
  out.profile.blocks.forEach((b, i) => {
    t.deepEqual(Object.keys(b), ['block', 'tokens', ...profileSlots.block], `block ${i}: its slots in order`);
    t.equal(b.block, i);
    t.equal(b.tokens, tokens, `block ${i} takes ${tokens} image tokens`);
    t.ok(profileSlots.block.every((s) => Number.isFinite(b[s]) && b[s] >= 0), `block ${i}: every time finite and non-negative`);
    tokens = out.schedule.tokenCounts[i];
  });
  t.ok(profileSlots.model.every((s) => Number.isFinite(out.profile[s]) && out.profile[s] >= 0), 'model slot times finite and non-negative');
  t.ok(Buffer.from(out.logits.buffer).equals(Buffer.from(plain.logits.buffer)), 'profiling does not change the logits');
  model.dispose();
});

test('a native failure reaches the caller as one NativeError carrying the native message', async (t) => {
  const { callNative, callNativeAsync } = require('../dist/native');
  const { Model } = loadBinding();
  const { tensors } = parseSafetensors(original);
  const record = {};
  for (const [name, tt] of tensors) record[name] = tt.data;
  const config = { embedDim: 48, depth: 12, numHeads: 5, patchSize: 16, inChans: 3, gridH: 14, gridW: 14, numClasses: 10, mlpHidden: 192 };
  let direct;
  try {
    new Model(config, record);
  } catch (e) {
    direct = e;
  }
  t.ok(direct instanceof Error, `the binding throws: ${direct && direct.message}`);
  try {
    callNative(() => new Model(config, record));
    t.fail('no error');
  } catch (e) {
    t.ok(e instanceof evit.NativeError, 'NativeError');
    t.equal(e.code, 'EVIT_NATIVE');
    t.equal(e.message, direct.message, 'the native message, unchanged and unprefixed');
    t.equal(e.cause.message, direct.message, 'the native error is the cause');
    t.equal(e.cause.code, 'EVIT_NATIVE_ARGUMENT', "the cause keeps the binding's code: it refused its arguments");
  }
  const m = new Model({ ...config, numHeads: 3 }, record);
  const keep = new Int32Array(12).fill(-1);
  // A refused argument throws synchronously from forward(); the async call turns it into a rejection alike.
  await rejects(t, callNativeAsync(() => m.forward(new Float32Array(3 * 224 * 224), 2, keep, new Uint8Array(12))),
    evit.NativeError, 'EVIT_NATIVE', /^images has 150528 elements, expected 301056$/, 'a refused forward');
  m.dispose();
  const loadFailure = new evit.NativeError('could not load the evit native addon');
  t.throws(() => callNative(() => { throw loadFailure; }), (e) => e === loadFailure, 'a NativeError passes through as it is');
});
