'use strict';
// The Shunted Transformer through the public API: loadModel detects the family from the tensor
// names, folds the stem BatchNorms, and forward/classify match the float64 goldens of
// tools/reference/shunted_reference.py within 1e-4 for every fixture, checkpoint format and
// input size. Nothing is dropped: kept is empty and schedules that would drop are refused.
const test = require('tape');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const evit = require('../dist');
const { parseSafetensors } = require('../dist/weights/safetensors');
const { foldBatchNorm } = require('../dist/weights/batchNorm');
const { golden, shuntedFixture } = require('./helpers/shuntedFixtures');

const LOGIT_TOL = golden.tolerance.cpuLogitsAbs;
const inputPath = (name) => path.join(__dirname, 'fixtures', 'shunted', golden.inputs[name].file);
const maxAbsDiff = (a, b) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);
const [c0, c2] = golden.models;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'evit-shunted-'));
test.onFinish(() => fs.rmSync(tmp, { recursive: true, force: true }));

async function rejects(t, promise, Type, re, msg) {
  try {
    await promise;
    t.fail(`${msg}: resolved`);
  } catch (e) {
    t.ok(e instanceof Type && re.test(e.message), `${msg}: ${e.constructor.name}: ${e.message}`);
  }
}

for (const model of golden.models) {
  for (const [kind, file] of Object.entries(model.files)) {
    test(`loadModel + forward, ${model.name} (${kind}): the goldens at every input size`, async (t) => {
      for (const c of model.cases) {
        const m = await evit.loadModel(shuntedFixture(file), { numHeads: model.arch.numHeads, imgSize: c.imgSize });
        t.equal(m.family, 'shunted', 'family told by the tensor names');
        t.deepEqual(m.architecture.embedDims, model.arch.embedDims, 'embed dims inferred');
        t.deepEqual([m.architecture.srRatios, m.architecture.numConv], [model.arch.srRatios, model.arch.numConv], 'sr ratios and num_conv inferred');
        const input = await evit.readNpy(inputPath(c.input));
        const out = await m.forward(input);
        const B = input.shape[0];
        t.deepEqual(out.shape, [B, model.arch.numClasses], `${c.imgSize} px: logits shape`);
        const d = maxAbsDiff(out.logits, c.logits.flat());
        t.ok(d <= LOGIT_TOL, `${c.imgSize} px: logits within ${LOGIT_TOL} of the float64 reference (max diff ${d.toExponential(2)})`);
        t.deepEqual(out.kept, [], `${c.imgSize} px: kept is empty`);
        t.deepEqual([out.schedule.keep.length, out.schedule.dropBlocks, out.schedule.keepRate], [0, [], 1], 'the empty schedule');
        t.equal(m.numPatches, c.stages[0].tokens, 'numPatches: the first stage\'s tokens');
        m.dispose();
      }
    });
  }
}

test('classify: a .npy batch gives the golden logits; kept is empty; images go through the DeiT eval transform', async (t) => {
  const m = await evit.loadModel(shuntedFixture(c2.files.safetensors), { numHeads: c2.arch.numHeads });
  t.equal(m.imgSize, 224, 'default input size 224 px');
  t.deepEqual([m.preprocess.resizeSize, m.preprocess.cropPct, m.preprocess.mean, m.preprocess.std],
    [256, 0.875, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]], "timm's DeiT eval transform: resize 256 (bicubic), crop 224, ImageNet mean/std");
  const res = await m.classify(inputPath('input-224.npy'), { top: 3 });
  const want = c2.cases.find((c) => c.imgSize === 224);
  res.forEach((r, b) => {
    t.ok(maxAbsDiff(r.logits, want.logits[b]) <= LOGIT_TOL, `image ${b}: logits match`);
    t.deepEqual(r.kept, [], `image ${b}: no kept tokens`);
    t.equal(r.top.length, 3, `image ${b}: top 3`);
  });
  const png = path.join(__dirname, '..', 'examples', 'shapes.png');
  const [fromImage] = await m.classify(png);
  const pre = await evit.preprocessBatch([png], m.preprocess);
  const direct = await m.forward(pre);
  t.ok(maxAbsDiff(fromImage.logits, direct.logits) === 0, 'an image classifies as its preprocessed tensor');
  m.dispose();
});

test('the .pth and safetensors files of one model give the same logits', async (t) => {
  const input = await evit.readNpy(inputPath('input-256.npy'));
  const logits = [];
  for (const file of [c2.files.safetensors, c2.files['pth-bare']]) {
    const m = await evit.loadModel(shuntedFixture(file), { numHeads: c2.arch.numHeads, imgSize: 256 });
    logits.push(Array.from((await m.forward(input)).logits));
    m.dispose();
  }
  t.deepEqual(logits[0], logits[1], 'identical');
  t.end();
});

test('profile: the Shunted slots, per block with its stage and token count', async (t) => {
  const { shunted: slots } = evit.backendInfo().profileSlots;
  const m = await evit.loadModel(shuntedFixture(c0.files['pth-model']), { numHeads: c0.arch.numHeads, imgSize: 64 });
  const out = await m.forward(await evit.readNpy(inputPath('input-64.npy')), { profile: true });
  t.deepEqual(Object.keys(out.profile), ['family', ...slots.model, 'blocks'], 'family, the model slots, then the blocks');
  t.equal(out.profile.family, 'shunted');
  const stages = c0.arch.depths.flatMap((d, s) => Array(d).fill(s + 1));
  t.deepEqual(out.profile.blocks.map((b) => b.stage), stages, 'one entry per block, in stage order');
  t.deepEqual(out.profile.blocks.map((b) => b.tokens), stages.map((s) => c0.cases[2].stages[s - 1].tokens), 'each block\'s token count');
  t.ok(out.profile.blocks.every((b) => slots.block.every((s) => Number.isFinite(b[s]) && b[s] >= 0)), 'every time finite and non-negative');
  m.dispose();
});

test('a schedule that would drop tokens is refused, at load and per call', async (t) => {
  const file = shuntedFixture(c0.files['pth-model']);
  const opts = { numHeads: c0.arch.numHeads, imgSize: 64 };
  await rejects(t, evit.loadModel(file, { ...opts, keepRate: 0.7 }), evit.OptionsError, /keepRate 0\.7: a Shunted Transformer drops no tokens/, 'keepRate 0.7');
  await rejects(t, evit.loadModel(file, { ...opts, dropLoc: [0] }), evit.OptionsError, /dropLoc 0: a Shunted Transformer drops no tokens/, 'dropLoc');
  const m = await evit.loadModel(file, { ...opts, keepRate: 1, dropLoc: [] });
  t.pass('keepRate 1 and no dropping blocks are the Shunted schedule');
  const input = await evit.readNpy(inputPath('input-64.npy'));
  await rejects(t, m.forward(input, { keepRate: 0.5 }), evit.OptionsError, /keepRate 0\.5/, 'forward with keepRate 0.5');
  await rejects(t, m.forward(input, { keepCounts: [3] }), evit.OptionsError, /keepCounts 3/, 'forward with keepCounts');
  await rejects(t, evit.visualize(m, path.join(__dirname, '..', 'examples', 'shapes.png')), evit.OptionsError, /a Shunted Transformer drops none/, 'visualize');
  m.dispose();
});

test('bad options and input sizes are clear errors', async (t) => {
  const file = shuntedFixture(c0.files['pth-model']);
  const heads = c0.arch.numHeads;
  await rejects(t, evit.loadModel(file), evit.OptionsError, /cannot infer the attention heads.*pass `arch`.*or `numHeads`/, 'no heads for an unreleased shape');
  await rejects(t, evit.loadModel(file, { numHeads: 2 }), evit.OptionsError, /one head count per stage, e\.g\. 2,4,8,16/, 'one head count');
  await rejects(t, evit.loadModel(file, { numHeads: [2, 4, 5, 2] }), evit.OptionsError, /numHeads 5 for stage 3 does not divide its embed dim 24/, 'heads that do not divide');
  await rejects(t, evit.loadModel(file, { numHeads: [2, 4, 3, 2] }), evit.OptionsError, /numHeads 3 for stage 3 is odd/, 'odd heads where they split');
  await rejects(t, evit.loadModel(file, { arch: 'shunted_t' }), evit.WeightsError, /does not match arch shunted_t/, 'a released arch the tensors contradict');
  await rejects(t, evit.loadModel(file, { numHeads: heads, imgSize: 200 }), evit.OptionsError,
    /input 200 px gives stage 1 a 50x50 token grid, which its sr ratio 8 does not divide.*nearest sizes that work, height: 194 or 223/, 'imgSize 200');
  await rejects(t, evit.loadModel(file, { numHeads: heads, imgSize: 8192 }), evit.OptionsError, /imgSize must be an integer in \[1, 4096\]/, 'imgSize too large');
  // device 'cuda' and 'auto' choose as for DeiT: CUDA where it can run (test/gpu checks its results), else
  // a DeviceError for 'cuda' and the CPU with the reason for 'auto'.
  const cudaHere = evit.backendInfo().cuda.available;
  if (cudaHere) {
    const onCuda = await evit.loadModel(file, { numHeads: heads, imgSize: 64, device: 'cuda' });
    t.equal(onCuda.backend, 'cuda', 'device cuda runs it on CUDA');
    onCuda.dispose();
  } else {
    await rejects(t, evit.loadModel(file, { numHeads: heads, device: 'cuda' }), evit.DeviceError, /'cuda' was requested but CUDA cannot be used/, 'device cuda without a usable GPU');
  }
  const auto = await evit.loadModel(file, { numHeads: heads, imgSize: 64, device: 'auto' });
  t.equal(auto.backend, cudaHere ? 'cuda' : 'cpu', `device auto runs it on ${auto.backend} (${auto.backendReason ?? 'a usable GPU'})`);
  t.equal(auto.backendReason, cudaHere ? null : evit.backendInfo().cuda.reason, 'backendReason: the probe\'s reason, as for DeiT');
  auto.dispose();
  const m = await evit.loadModel(file, { numHeads: heads, imgSize: 64 });
  await rejects(t, m.forward({ data: new Float32Array(3 * 224 * 224), shape: [1, 3, 224, 224] }), evit.InputError, /expected \[batch, 3, 64, 64\]/, 'an input of another size');
  m.dispose();
  // A DeiT checkpoint takes one head count, not a list.
  await rejects(t, evit.loadModel(require('./helpers/fixtures').tinyModel, { numHeads: [3, 3, 3, 3] }), evit.OptionsError, /one count per stage, for a Shunted Transformer/, 'a list for DeiT');
});

test('non-finite weights, BatchNorm statistics included, are refused at load naming the tensor', async (t) => {
  const ckpt = await evit.readCheckpoint(shuntedFixture(c2.files.safetensors));
  const write = (name, mutate) => {
    const tensors = new Map([...ckpt.tensors].map(([n, v]) => [n, { dtype: 'F32', shape: v.shape, data: n === name ? mutate(v.data.slice()) : v.data }]));
    const file = path.join(tmp, `${name}.safetensors`);
    fs.writeFileSync(file, evit.serializeSafetensors(tensors, { format: 'pt' }));
    return file;
  };
  const opts = { numHeads: c2.arch.numHeads };
  await rejects(t, evit.loadModel(write('patch_embed1.conv.4.running_mean', (d) => { d[3] = NaN; return d; }), opts),
    evit.WeightsError, /tensor patch_embed1\.conv\.4\.running_mean holds NaN at element 3/, 'a NaN running mean');
  await rejects(t, evit.loadModel(write('patch_embed1.conv.1.running_var', (d) => { d[0] = -1; return d; }), opts),
    evit.WeightsError, /patch_embed1\.conv\.1\.running_var has -1 at channel 0: a BatchNorm variance must be a number >= 0/, 'a negative variance');
  await rejects(t, evit.loadModel(write('block3.1.attn.kv2.weight', (d) => { d[7] = Infinity; return d; }), opts),
    evit.WeightsError, /tensor block3\.1\.attn\.kv2\.weight holds Infinity at element 7/, 'an infinite weight');
});

test('BatchNorm folding: conv then BN equals the folded conv, computed in float64 and rounded once', (t) => {
  const conv = { shape: [2, 1, 1, 3], data: Float32Array.from([0.5, -1.25, 3, 0.1, 0.2, -0.3]) };
  const bn = { weight: Float32Array.from([2, -0.5]), bias: Float32Array.from([0.25, 1]), runningMean: Float32Array.from([0.1, -2]), runningVar: Float32Array.from([4, 0.01]) };
  const f = foldBatchNorm(conv, null, bn);
  const x = [1.5, -2, 0.75];
  for (let o = 0; o < 2; o++) {
    const y = x.reduce((s, v, i) => s + v * conv.data[o * 3 + i], 0);
    const bnOut = ((y - bn.runningMean[o]) / Math.sqrt(bn.runningVar[o] + 1e-5)) * bn.weight[o] + bn.bias[o];
    const a = bn.weight[o] / Math.sqrt(bn.runningVar[o] + 1e-5);
    t.deepEqual(Array.from(f.weight.data.subarray(o * 3, o * 3 + 3)), [0, 1, 2].map((i) => Math.fround(conv.data[o * 3 + i] * a)), `channel ${o}: W·a rounded once`);
    t.equal(f.bias[o], Math.fround(bn.bias[o] - bn.runningMean[o] * a), `channel ${o}: β − μ·a rounded once`);
    const folded = x.reduce((s, v, i) => s + v * f.weight.data[o * 3 + i], 0) + f.bias[o];
    t.ok(Math.abs(folded - bnOut) < 1e-6 * (1 + Math.abs(bnOut)), `channel ${o}: folded conv = conv + BN (${folded} vs ${bnOut})`);
  }
  t.deepEqual(f.weight.shape, conv.shape, 'shape kept');
  t.end();
});

/** The safetensors bytes of `tensors` plus int64 BatchNorm counters, as a HF/timm conversion writes them. */
function withCounters(buf, names, dtype = 'I64') {
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8'));
  let end = buf.length - 8 - n;
  const extra = [];
  for (const name of names) {
    const bytes = Buffer.alloc(dtype === 'I64' ? 8 : 4);
    bytes.writeUInt32LE(12345, 0);
    header[name] = { dtype, shape: [], data_offsets: [end, end + bytes.length] };
    end += bytes.length;
    extra.push(bytes);
  }
  const h = Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(h.length));
  return Buffer.concat([len, h, buf.subarray(8 + n), ...extra]);
}

test('safetensors: the I64 num_batches_tracked scalars of a converted checkpoint are read past, not decoded', async (t) => {
  const counters = [1, 4, 7].map((i) => `patch_embed1.conv.${i}.num_batches_tracked`);
  const file = path.join(tmp, 'with-counters.safetensors');
  fs.writeFileSync(file, withCounters(fs.readFileSync(shuntedFixture(c2.files.safetensors)), counters));
  const parsed = parseSafetensors(fs.readFileSync(file), file);
  t.deepEqual([...parsed.skipped], counters.map((n) => [n, { dtype: 'I64', shape: [] }]), 'listed as skipped');
  t.notOk(counters.some((n) => parsed.tensors.has(n)), 'not among the float tensors');
  const m = await evit.loadModel(file, { numHeads: c2.arch.numHeads, imgSize: 64 });
  const out = await m.forward(await evit.readNpy(inputPath('input-64.npy')));
  t.ok(maxAbsDiff(out.logits, c2.cases[2].logits.flat()) <= LOGIT_TOL, 'the model loads and matches the goldens');
  m.dispose();
  const int32 = parseSafetensors(withCounters(fs.readFileSync(shuntedFixture(c2.files.safetensors)), counters.slice(0, 1), 'I32'));
  t.deepEqual([...int32.skipped.values()], [{ dtype: 'I32', shape: [] }], 'an I32 counter too');
  t.throws(() => parseSafetensors(withCounters(fs.readFileSync(shuntedFixture(c2.files.safetensors)), ['block1.0.attn.q.step'])),
    /tensor "block1\.0\.attn\.q\.step" has unsupported dtype I64/, 'any other integer tensor is still refused');
  const inspect = require('../dist/commands/inspect').describeCheckpoint(await evit.readCheckpoint(file), file);
  t.deepEqual(inspect.skipped.map((s) => s.name), counters, 'inspect lists them as not read');
  t.end();
});

test('a model card with one head count per stage loads without options', async (t) => {
  const dir = path.join(tmp, 'carded');
  fs.mkdirSync(dir);
  fs.copyFileSync(shuntedFixture(c0.files['pth-model']), path.join(dir, 'model.pth'));
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ architecture: { numHeads: c0.arch.numHeads }, preprocess: { imgSize: 64 } }));
  const m = await evit.loadModel(path.join(dir, 'model.pth'));
  t.deepEqual([m.architecture.numHeads, m.imgSize], [c0.arch.numHeads, 64], 'heads and input size from the card');
  const out = await m.forward(await evit.readNpy(inputPath('input-64.npy')));
  t.ok(maxAbsDiff(out.logits, c0.cases[2].logits.flat()) <= LOGIT_TOL, 'logits match');
  m.dispose();
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ architecture: { numHeads: c0.arch.numHeads }, schedule: { keepRate: 0.7 } }));
  await rejects(t, evit.loadModel(path.join(dir, 'model.pth')), evit.WeightsError, /model card .*config\.json: keepRate 0\.7: a Shunted Transformer drops no tokens/, 'a card asking for a drop');
});
