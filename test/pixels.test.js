'use strict';
// uint8 images (PixelTensor, preprocessPixels) normalised by the backend: logits and kept tokens
// bit for bit those of the float32 tensor preprocessBatch makes, on the bundled model, a
// DeiT-shaped 3-channel checkpoint and a Shunted Transformer (whose input the binding expands);
// through Model.forward, Model.classify and the Batcher; and every malformed uint8 request
// refused with an error that says what was wrong. The CUDA backend's side is in
// test/native/cuda_model_emulated.cc and test/gpu/parity.test.js.
const test = require('tape');
const path = require('node:path');
const evit = require('../dist');
const { loadBinding } = require('../dist/native');
const { tinyModel, tinyOptions } = require('./helpers/fixtures');
const { shuntedFixture, golden: shuntedGolden } = require('./helpers/shuntedFixtures');
const { mulberry32 } = require('./helpers/reference');

const examples = path.join(__dirname, '..', 'examples');
const images = ['sneaker', 'bag', 'coat', 'shapes'].map((n) => path.join(examples, `${n}.png`));

const bits = (f32) => Buffer.from(f32.buffer, f32.byteOffset, f32.byteLength);
const sameBits = (a, b) => a.length === b.length && bits(a).equals(bits(b));
const sameKept = (a, b) =>
  a.length === b.length && a.every((k, i) => k.block === b[i].block && bits(k.tokens).equals(bits(b[i].tokens)));

async function samePaths(t, m, label) {
  const f32 = await evit.preprocessBatch(images, m.preprocess);
  const px = await evit.preprocessPixels(images, m.preprocess);
  t.equal(px.dtype, 'uint8', `${label}: preprocessPixels gives dtype uint8`);
  t.ok(px.data instanceof Uint8Array && px.data.length * 4 === f32.data.byteLength,
    `${label}: a quarter of the float32 tensor's bytes (${px.data.length} vs ${f32.data.byteLength})`);
  t.deepEqual(px.shape, f32.shape, `${label}: the same [B, C, H, W] shape`);
  // The pixels are planar: normalising them in JavaScript gives preprocessBatch's tensor exactly.
  const lut = evit.normalizationTable(m.preprocess.mean, m.preprocess.std);
  const plane = m.imgSize * m.imgSize;
  const C = px.shape[1];
  const expanded = new Float32Array(px.data.length);
  for (let i = 0; i < px.data.length; i++) expanded[i] = lut[(Math.floor(i / plane) % C) * 256 + px.data[i]];
  t.ok(sameBits(expanded, f32.data), `${label}: planar pixels through the table are preprocessBatch's tensor bit for bit`);
  for (const keepRate of [1, 0.7]) {
    const a = await m.forward(f32, { keepRate });
    const b = await m.forward(px, { keepRate });
    t.ok(sameBits(a.logits, b.logits), `${label}, keep ${keepRate}: uint8 logits equal float32 logits bit for bit`);
    t.ok(sameKept(a.kept, b.kept), `${label}, keep ${keepRate}: the same kept tokens`);
  }
  const viaClassify = await m.classify(images, { top: 1 });
  const a = await m.forward(f32);
  const classes = m.architecture.numClasses;
  t.ok(viaClassify.every((r, i) => sameBits(Float32Array.from(r.logits), a.logits.subarray(i * classes, (i + 1) * classes))),
    `${label}: classify (uint8 path) gives the float32 forward's logits`);
  return { f32, px };
}

test('the bundled model: uint8 pixels give the float32 path\'s logits bit for bit', async (t) => {
  const m = await evit.loadModel(undefined, { device: 'cpu' });
  await samePaths(t, m, 'bundled');
  const [top] = await m.classify(path.join(examples, 'sneaker.png'), { top: 1 });
  t.equal(top.top[0].label, 'Sneaker', 'sneaker.png is a Sneaker');
  t.equal((top.top[0].prob * 100).toFixed(2), '91.01', 'at 91.01%');
  m.dispose();
});

test('a DeiT-shaped RGB checkpoint: uint8 pixels, default and own statistics, bit for bit', async (t) => {
  const m = await evit.loadModel(tinyModel, { ...tinyOptions, device: 'cpu' });
  const { px } = await samePaths(t, m, 'tiny-evit');
  // Statistics of the caller's own, with pixel values of every level: the native table is the JS one.
  const rand = mulberry32(5);
  const mean = [0.1 + rand() * 0.8, 0.1 + rand() * 0.8, 0.1 + rand() * 0.8];
  const std = [0.05 + rand(), 0.05 + rand(), 0.05 + rand()];
  const data = new Uint8Array(px.data.length);
  for (let i = 0; i < data.length; i++) data[i] = i < 256 ? i : Math.floor(rand() * 256);
  const lut = evit.normalizationTable(mean, std);
  const plane = m.imgSize * m.imgSize;
  const f32 = new Float32Array(data.length);
  for (let i = 0; i < data.length; i++) f32[i] = lut[(Math.floor(i / plane) % 3) * 256 + data[i]];
  const a = await m.forward({ data: f32, shape: px.shape });
  const b = await m.forward({ dtype: 'uint8', data, shape: px.shape, mean, std });
  t.ok(sameBits(a.logits, b.logits) && sameKept(a.kept, b.kept), 'own mean and std: logits and kept tokens bit for bit');
  // Without mean and std the model's preprocessing statistics apply.
  const c = await m.forward({ dtype: 'uint8', data: px.data, shape: px.shape });
  const d = await m.forward(px);
  t.ok(sameBits(c.logits, d.logits), 'absent mean/std default to the model\'s preprocessing');
  m.dispose();
});

test('a Shunted Transformer: uint8 pixels, expanded by the binding, bit for bit', async (t) => {
  const model = shuntedGolden.models[0];
  const m = await evit.loadModel(shuntedFixture(model.files['pth-model']), { numHeads: model.arch.numHeads, device: 'cpu' });
  const f32 = await evit.preprocessBatch(images.slice(0, 2), m.preprocess);
  const px = await evit.preprocessPixels(images.slice(0, 2), m.preprocess);
  const a = await m.forward(f32);
  const b = await m.forward(px);
  t.ok(sameBits(a.logits, b.logits), 'shunted: uint8 logits equal float32 logits bit for bit');
  m.dispose();
});

test('the Batcher sends images as uint8 and keeps float32 and uint8 requests in separate batches', async (t) => {
  const m = await evit.loadModel(tinyModel, { ...tinyOptions, device: 'cpu' });
  const b = new evit.Batcher(m, { maxBatchSize: 8, maxWaitMs: 50 });
  const f32 = await evit.preprocessBatch(images, m.preprocess);
  const px = await evit.preprocessPixels(images, m.preprocess);
  const want = await m.forward(f32);
  // The two uint8 requests share a batch of 8: compare with the float32 pass of those 8.
  const twice = new Float32Array(2 * f32.data.length);
  twice.set(f32.data);
  twice.set(f32.data, f32.data.length);
  const want8 = await m.forward({ data: twice, shape: [8, ...f32.shape.slice(1)] });
  const classes = m.architecture.numClasses;
  const first4 = want8.logits.subarray(0, 4 * classes), last4 = want8.logits.subarray(4 * classes);
  const batches = [];
  b.on('batch', (e) => batches.push(e));
  const [viaImages, viaTensor, viaPixels] = await Promise.all([
    b.classify(images, { top: 1 }), b.forward(f32), b.forward(px),
  ]);
  t.ok(viaImages.results.every((r, i) => sameBits(Float32Array.from(r.logits), first4.subarray(i * classes, (i + 1) * classes))),
    'Batcher.classify of images: the float32 forward\'s logits');
  t.ok(sameBits(viaTensor.logits, want.logits), 'Batcher.forward of float32: its logits');
  t.ok(sameBits(viaPixels.logits, last4), 'Batcher.forward of uint8: the same logits');
  t.equal(batches.length, 2, 'float32 and uint8 requests ran in two batches');
  t.deepEqual(batches.map((e) => e.images).sort(), [4, 8], 'the two uint8 requests shared one');
  await b.close();
  m.dispose();
});

test('malformed uint8 requests are refused, saying what is wrong', async (t) => {
  const m = await evit.loadModel(tinyModel, { ...tinyOptions, device: 'cpu' });
  const shape = [1, 3, m.imgSize, m.imgSize];
  const n = 3 * m.imgSize * m.imgSize;
  const ok = new Uint8Array(n);
  const refuses = async (input, re, what) => {
    try {
      await m.forward(input);
      t.fail(`${what}: accepted`);
    } catch (err) {
      t.ok(err instanceof evit.InputError && re.test(err.message), `${what}: ${err.constructor.name}: ${err.message}`);
    }
  };
  await refuses({ dtype: 'uint8', data: new Uint8Array(n - 1), shape }, /has 150527 elements, shape \[1, 3, 224, 224\] needs 150528/, 'short buffer');
  await refuses({ dtype: 'uint8', data: new Float32Array(n), shape }, /data must be a Uint8Array for dtype 'uint8', got Float32Array/, 'float data as uint8');
  await refuses({ dtype: 'uint8', data: new Uint8ClampedArray(n), shape }, /must be a Uint8Array.*Uint8ClampedArray/, 'Uint8ClampedArray');
  await refuses({ dtype: 'uint16', data: ok, shape }, /dtype must be 'uint8'.*"uint16"/, 'unknown dtype');
  await refuses({ data: ok, shape }, /data must be a Float32Array, got Uint8Array \(uint8 pixels: pass \{dtype: 'uint8'/, 'uint8 data without dtype');
  await refuses({ dtype: 'uint8', data: ok, shape, mean: [0.5, 0.5] }, /mean must have one entry per channel: expected 3, got 2/, 'mean of 2');
  await refuses({ dtype: 'uint8', data: ok, shape, std: [0.5, 0.5, 0.5, 0.5] }, /std must have one entry per channel: expected 3, got 4/, 'std of 4');
  await refuses({ dtype: 'uint8', data: ok, shape, std: [0.5, 0, 0.5] }, /std\[1\] must be > 0, got 0/, 'std 0');
  await refuses({ dtype: 'uint8', data: ok, shape, mean: [0.5, NaN, 0.5] }, /mean\[1\] must be a finite number, got NaN/, 'NaN mean');
  await refuses({ dtype: 'uint8', data: ok, shape, mean: 'abc' }, /mean must be an array of 3 numbers/, 'mean a string');
  await refuses({ dtype: 'uint8', data: ok, shape: [1, 1, 224, 224] }, /expected \[batch, 3, 224, 224\]/, 'wrong channels');

  // The binding's own checks, for callers of the native class.
  const native = new (loadBinding().Model)(
    { embedDim: 48, depth: 1, numHeads: 3, patchSize: 16, inChans: 3, gridH: 1, gridW: 1, numClasses: 2, mlpHidden: 8 },
    (() => {
      const r = {};
      const add = (k, len) => { r[k] = new Float32Array(len).fill(0.01); };
      add('cls_token', 48); add('pos_embed', 2 * 48); add('patch_embed.proj.weight', 48 * 3 * 256); add('patch_embed.proj.bias', 48);
      for (const nm of ['norm1', 'norm2']) { add(`blocks.0.${nm}.weight`, 48); add(`blocks.0.${nm}.bias`, 48); }
      add('blocks.0.attn.qkv.weight', 3 * 48 * 48); add('blocks.0.attn.qkv.bias', 3 * 48);
      add('blocks.0.attn.proj.weight', 48 * 48); add('blocks.0.attn.proj.bias', 48);
      add('blocks.0.mlp.fc1.weight', 8 * 48); add('blocks.0.mlp.fc1.bias', 8);
      add('blocks.0.mlp.fc2.weight', 48 * 8); add('blocks.0.mlp.fc2.bias', 48);
      add('norm.weight', 48); add('norm.bias', 48); add('head.weight', 2 * 48); add('head.bias', 2);
      return r;
    })(),
  );
  const px = new Uint8Array(3 * 16 * 16);
  const keep = new Int32Array([-1]);
  const fuse = new Uint8Array(1);
  const stats = { mean: new Float32Array([0.5, 0.5, 0.5]), std: new Float32Array([0.25, 0.25, 0.25]) };
  const nativeRefuses = (fn, re, what) => t.throws(fn, re, `binding: ${what}`);
  nativeRefuses(() => native.forward(px, 1, keep, fuse, false), /uint8 images need normalize: \{ mean, std \}/, 'uint8 without normalize');
  nativeRefuses(() => native.forward(px.subarray(1), 1, keep, fuse, false, stats), /images has 767 elements, expected 768/, 'short uint8 buffer');
  nativeRefuses(() => native.forward(px, 1, keep, fuse, false, { mean: stats.mean }), /normalize\.std is required/, 'std missing');
  nativeRefuses(() => native.forward(px, 1, keep, fuse, false, { ...stats, mean: new Float32Array(2) }), /normalize\.mean has 2 elements, expected 3/, 'mean of 2');
  nativeRefuses(() => native.forward(px, 1, keep, fuse, false, { ...stats, std: [0.2, 0.2, 0.2] }), /normalize\.std must be a Float32Array/, 'std an array');
  nativeRefuses(() => native.forward(px, 1, keep, fuse, false, { ...stats, std: new Float32Array([0.2, -1, 0.2]) }), /normalize\.std\[1\] must be a finite number > 0/, 'negative std');
  nativeRefuses(() => native.forward(px, 1, keep, fuse, false, { ...stats, mean: new Float32Array([0.2, 0.2, Infinity]) }), /normalize\.mean\[2\] must be a finite number/, 'infinite mean');
  nativeRefuses(() => native.forward(new Float32Array(768), 1, keep, fuse, false, stats), /normalize \(mean and std\) applies to uint8 images only/, 'normalize with float32');
  nativeRefuses(() => native.forward(new Float64Array(768), 1, keep, fuse, false), /images must be a Float32Array \(normalised fp32\) or a Uint8Array/, 'Float64Array');
  const out = await native.forward(px, 1, keep, fuse, false, stats);
  t.equal(out.logits.length, 2, 'binding: a well-formed uint8 pass runs');
  native.dispose();
  m.dispose();
});
