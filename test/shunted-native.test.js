'use strict';
// The CPU backend's Shunted Transformer through the binding (`new Model({ family: 'shunted' })`)
// against the float64 goldens of tools/reference/shunted_reference.py: every fixture model
// (num_conv 0 and 2, sr ratios 8/4/2/1 and 2/4/2/1), every checkpoint format, at 224, 256 and
// 64 px. The stem BatchNorms are folded here, as the TypeScript loader does before the binding.
const test = require('tape');
const { loadBinding } = require('../dist/native');
const ref = require('./helpers/reference');
const { golden, shuntedConfig, loadShuntedFixture, readShuntedInput } = require('./helpers/shuntedFixtures');

const binding = loadBinding();
const LOGIT_TOL = golden.tolerance.cpuLogitsAbs; // 1e-4, as for DeiT (SPEC §4)
const NO_PLAN = [new Int32Array(0), new Uint8Array(0)];

const maxAbsDiff = (a, b) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);

for (const model of golden.models) {
  for (const [kind, file] of Object.entries(model.files)) {
    test(`${model.name} (${kind}): logits match the float64 reference at every input size`, async (t) => {
      const { tensors } = await loadShuntedFixture(model, file);
      for (const c of model.cases) {
        const input = await readShuntedInput(c.input);
        const B = input.shape[0];
        const m = new binding.Model(shuntedConfig(model.arch, c.imgSize), tensors);
        const out = await m.forward(input.data, B, ...NO_PLAN);
        t.equal(out.logits.length, B * model.arch.numClasses, `${c.imgSize} px: ${B} × ${model.arch.numClasses} logits`);
        const d = maxAbsDiff(out.logits, c.logits.flat());
        t.ok(d <= LOGIT_TOL, `${c.imgSize} px: logits within ${LOGIT_TOL} (max diff ${d.toExponential(2)})`);
        t.deepEqual(out.kept, [], `${c.imgSize} px: nothing kept (nothing is dropped)`);
        t.notOk('profile' in out, `${c.imgSize} px: no profile unless asked`);
        m.dispose();
      }
    });
  }
}

test('a batch gives the logits of its images run one at a time, also when it runs in chunks', async (t) => {
  const model = golden.models[1];
  const { tensors } = await loadShuntedFixture(model, model.files.safetensors);
  const input = await readShuntedInput('input-224.npy');
  const per = input.data.length / input.shape[0];
  const m = new binding.Model(shuntedConfig(model.arch, 224), tensors);
  const whole = await m.forward(input.data, 2, ...NO_PLAN);
  for (let b = 0; b < 2; b++) {
    const one = await m.forward(input.data.slice(b * per, (b + 1) * per), 1, ...NO_PLAN);
    const d = maxAbsDiff(one.logits, whole.logits.subarray(b * 10, (b + 1) * 10));
    t.ok(d < 1e-5, `image ${b}: batch vs single max diff ${d.toExponential(2)}`);
  }
  t.ok(m.activationBytes > 0 && m.weightBytes > 0, `arena ${m.activationBytes} B, weights ${m.weightBytes} B`);
  // At 448 px one image needs over half of the 64 MiB a pass may hold: two images run as two chunks.
  const big = new binding.Model(shuntedConfig(model.arch, 448), tensors);
  const images = ref.uniform(ref.mulberry32(5), 2 * 3 * 448 * 448, -2, 2);
  const pair = await big.forward(images, 2, ...NO_PLAN);
  const single = new binding.Model(shuntedConfig(model.arch, 448), tensors);
  await single.forward(images.subarray(0, 3 * 448 * 448), 1, ...NO_PLAN);
  t.ok(single.activationBytes > 32 * 2 ** 20, `one image's arena is ${(single.activationBytes / 2 ** 20).toFixed(1)} MiB`);
  t.equal(big.activationBytes, single.activationBytes, 'the batch of two ran in one-image chunks');
  single.dispose();
  for (let b = 0; b < 2; b++) {
    const one = await big.forward(images.slice(b * 3 * 448 * 448, (b + 1) * 3 * 448 * 448), 1, ...NO_PLAN);
    const d = maxAbsDiff(one.logits, pair.logits.subarray(b * 10, (b + 1) * 10));
    t.ok(d < 1e-5, `448 px image ${b}: chunked batch vs single max diff ${d.toExponential(2)}`);
  }
  m.dispose();
  big.dispose();
});

test('profile: one time per model slot and per block slot, named by backendInfo().profileSlots.shunted', async (t) => {
  const slots = binding.backendInfo().profileSlots;
  t.deepEqual(slots.shunted, {
    model: ['stem', 'patchEmbed', 'stageNorm', 'head'],
    block: ['norm1', 'q', 'kv', 'attention', 'proj', 'norm2', 'fc1', 'dwconv', 'fc2'],
  }, 'Shunted slots');
  t.deepEqual(slots.block.length, 8, 'the DeiT slots are where they were');
  const model = golden.models[0];
  const { tensors } = await loadShuntedFixture(model, model.files['pth-model']);
  const m = new binding.Model(shuntedConfig(model.arch, 64), tensors);
  const input = await readShuntedInput('input-64.npy');
  const out = await m.forward(input.data, 2, ...NO_PLAN, true);
  const depth = model.arch.depths.reduce((a, b) => a + b, 0);
  t.equal(out.profile.length, 4 + depth * 9, `${4 + depth * 9} times`);
  t.ok(out.profile.every((v) => v >= 0) && out.profile[0] > 0, 'non-negative, the stem took time');
  const plain = await m.forward(input.data, 2, ...NO_PLAN);
  t.deepEqual(Array.from(out.logits), Array.from(plain.logits), 'profiling does not change the logits');
  m.dispose();
});

test('invalid configs are range or type errors naming the field', async (t) => {
  const model = golden.models[0];
  const { tensors } = await loadShuntedFixture(model, model.files['pth-model']);
  const ok = shuntedConfig(model.arch, 224);
  const withStage = (s, patch) => ({ ...ok, stages: ok.stages.map((st, i) => (i === s ? { ...st, ...patch } : st)) });
  const cases = [
    [{ ...ok, family: 'pvt' }, TypeError, /config\.family must be 'deit' or 'shunted', got pvt/],
    [{ ...ok, stages: ok.stages.slice(0, 3) }, TypeError, /config\.stages must be an array of 4 stage objects/],
    [withStage(2, { depth: undefined }), TypeError, /config\.stages\[2\]\.depth is required/],
    [{ ...ok, imgH: 200 }, RangeError, /input 200×224 gives stage 1 a 50×56 token grid, which its sr ratio 8 does not divide/],
    [{ ...ok, imgH: 16, imgW: 16 }, RangeError, /stage 1 a 4×4 token grid, which its sr ratio 8 does not divide/],
    [withStage(1, { heads: 3 }), RangeError, /config\.stages\[1\]\.heads \(3\) does not divide dim \(16\)/],
    [withStage(2, { heads: 3 }), RangeError, /config\.stages\[2\]\.heads \(3\) must be even where srRatio > 1/],
    [withStage(0, { srRatio: 3 }), RangeError, /config\.stages\[0\]\.srRatio must be 1 or even/],
    [withStage(3, { dim: 0 }), RangeError, /config\.stages\[3\]\.dim must be an integer in \[1, 16384\], got 0/],
    [{ ...ok, numConv: -1 }, RangeError, /config\.numConv must be an integer in \[0, 64\]/],
    [{ ...ok, numClasses: 1.5 }, RangeError, /config\.numClasses must be an integer/],
  ];
  for (const [cfg, type, re] of cases) {
    try {
      new binding.Model(cfg, tensors);
      t.fail(`${re}: accepted`);
    } catch (e) {
      t.ok(e instanceof type && re.test(e.message) && e.code === 'EVIT_NATIVE_ARGUMENT', `${e.constructor.name}: ${e.message}`);
    }
  }
  t.end();
});

test('missing or misshapen tensors and bad requests are clear errors', async (t) => {
  const model = golden.models[0];
  const { tensors } = await loadShuntedFixture(model, model.files['pth-model']);
  const cfg = shuntedConfig(model.arch, 64);
  const { 'patch_embed1.conv.0.bias': _folded, ...unfolded } = tensors;
  t.throws(() => new binding.Model(cfg, unfolded), /missing tensor patch_embed1\.conv\.0\.bias/, 'an unfolded stem');
  t.throws(() => new binding.Model(cfg, { ...tensors, 'block3.0.attn.sr2.weight': new Float32Array(5) }),
    /tensor block3\.0\.attn\.sr2\.weight has 5 elements, expected 576/, 'a misshapen sr conv');
  if (!binding.backendInfo().cuda.available)
    t.throws(() => new binding.Model(cfg, tensors, { device: 'cuda' }), /CUDA backend: .*(cannot run here|no CUDA backend)/, 'device cuda without a usable GPU says why');
  const m = new binding.Model(cfg, { ...tensors, 'patch_embed1.conv.1.running_var': new Float32Array(64) });
  const image = new Float32Array(3 * 64 * 64);
  t.throws(() => m.forward(image, 1, new Int32Array(1), new Uint8Array(1)), /keep has 1 elements, expected 0/, 'a plan');
  t.throws(() => m.forward(image.subarray(1), 1, ...NO_PLAN), /images has 12287 elements, expected 12288/, 'a short image');
  const out = await m.forward(image, 1, ...NO_PLAN);
  t.ok(out.logits.every(Number.isFinite), 'tensors beyond the spec list are not read');
  m.dispose();
  t.throws(() => m.forward(image, 1, ...NO_PLAN), /disposed/, 'after dispose');
  t.end();
});
