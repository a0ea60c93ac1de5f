'use strict';
// The Shunted Transformer on CUDA against the CPU backend, on the fixtures of test/fixtures/shunted
// (two random-weight models: num_conv 0 and 2, every sr ratio, head dims 4 to 32): f32 within
// docs/CUDA.md's f32 tolerance and the float64 goldens, f16 and bf16 within the tolerances measured
// on the SIMT emulator (compare.js), at the 64 px input (and one 224 px image in f32); chunked and
// concurrent batches, graph replays and the profile. Small batches: the suite also runs on the emulator.
const test = require('tape');
const evit = require('../../dist');
const { golden, shuntedFixture, readShuntedInput } = require('../helpers/shuntedFixtures');
const { SHUNTED_LOGIT_TOL, randomImages, checkLogits } = require('./compare');

const [c0, c2] = golden.models;
const GOLDEN_TOL = golden.tolerance.cpuLogitsAbs;
const same = (a, b) => a.length === b.length && a.every((v, i) => Object.is(v, b[i]));
const fileOf = (model) => shuntedFixture(Object.values(model.files)[0]);

/** CPU and CUDA models of one fixture at imgSize. */
async function shuntedPair(model, precision, options = {}) {
  const common = { numHeads: model.arch.numHeads, imgSize: 64, ...options };
  const cpu = await evit.loadModel(fileOf(model), { ...common, device: 'cpu' });
  const gpu = await evit.loadModel(fileOf(model), { ...common, device: 'cuda', precision });
  return { cpu, gpu };
}

for (const model of golden.models) {
  test(`f32 ${model.name} at 64 px: CUDA vs CPU and the float64 reference`, async (t) => {
    const { cpu, gpu } = await shuntedPair(model, 'f32');
    t.deepEqual([gpu.family, gpu.backend, gpu.precision, gpu.backendReason], ['shunted', 'cuda', 'f32', null], 'a Shunted model on CUDA, f32');
    const input = await readShuntedInput('input-64.npy');
    const [want, got] = await Promise.all([cpu.forward(input), gpu.forward(input)]);
    checkLogits(t, `f32 ${model.name}`, want, got, SHUNTED_LOGIT_TOL.f32);
    t.deepEqual(got.kept, [], 'nothing is kept: the family drops no tokens');
    const gold = model.cases.find((c) => c.imgSize === 64).logits.flat();
    const worst = gold.reduce((m, v, i) => Math.max(m, Math.abs(v - got.logits[i]) || Infinity), 0);
    t.ok(worst <= GOLDEN_TOL + SHUNTED_LOGIT_TOL.f32, `f32 ${model.name}: logits within ${GOLDEN_TOL + SHUNTED_LOGIT_TOL.f32} of the float64 reference (worst ${worst.toExponential(2)})`);
    cpu.dispose();
    gpu.dispose();
  });

  for (const precision of ['f16', 'bf16']) {
    test(`${precision} ${model.name} at 64 px: CUDA vs CPU on 4 images`, async (t) => {
      const { cpu, gpu } = await shuntedPair(model, precision);
      t.equal(gpu.precision, precision, `precision ${precision}`);
      const input = randomImages(cpu, 4, 61);
      const [want, got] = await Promise.all([cpu.forward(input), gpu.forward(input)]);
      checkLogits(t, `${precision} ${model.name}`, want, got, SHUNTED_LOGIT_TOL[precision]);
      cpu.dispose();
      gpu.dispose();
    });
  }
}

test('f32 shunted-c0 at 224 px (keys 49 and 196 per group): CUDA vs the float64 reference', async (t) => {
  const gpu = await evit.loadModel(fileOf(c0), { numHeads: c0.arch.numHeads, device: 'cuda', precision: 'f32' });
  t.equal(gpu.imgSize, 224, 'default input size');
  const input = await readShuntedInput('input-224.npy');
  const per = input.data.length / input.shape[0];
  const got = await gpu.forward({ data: input.data.subarray(0, per), shape: [1, ...input.shape.slice(1)] });
  const gold = c0.cases.find((c) => c.imgSize === 224).logits[0];
  const worst = gold.reduce((m, v, i) => Math.max(m, Math.abs(v - got.logits[i]) || Infinity), 0);
  t.ok(worst <= GOLDEN_TOL + SHUNTED_LOGIT_TOL.f32, `logits of image 0 within ${GOLDEN_TOL + SHUNTED_LOGIT_TOL.f32} of the float64 reference (worst ${worst.toExponential(2)})`);
  gpu.dispose();
});

test('bf16 shunted-c2: an image gives the same bits alone, in a batch and in chunks; two batches in flight', async (t) => {
  const gpu = await evit.loadModel(fileOf(c2), { numHeads: c2.arch.numHeads, imgSize: 64, device: 'cuda', precision: 'bf16', maxBatch: 2, streams: 2 });
  const batch = randomImages(gpu, 3, 62);  // chunks of 2 and 1
  const whole = await gpu.forward(batch);
  const per = batch.data.length / 3;
  const differ = [];
  for (const i of [0, 2]) {
    const alone = await gpu.forward({ data: batch.data.slice(i * per, (i + 1) * per), shape: [1, ...batch.shape.slice(1)] });
    const K = c2.arch.numClasses;
    if (!same(Array.from(whole.logits.subarray(i * K, (i + 1) * K)), Array.from(alone.logits))) differ.push(i);
  }
  t.deepEqual(differ, [], 'images 0 and 2 of a chunked batch of 3 match their own one-image passes bit for bit');
  const other = randomImages(gpu, 2, 63);
  const alone = await gpu.forward(other);
  const [a, b] = await Promise.all([gpu.forward(batch), gpu.forward(other)]);
  t.ok(same(Array.from(a.logits), Array.from(whole.logits)) && same(Array.from(b.logits), Array.from(alone.logits)),
    'two batches in flight on two streams give the bits of each run alone');
  gpu.dispose();
});

test('f32 shunted-c0: graph replays and the profiled pass give the eager bits; every profile slot is timed', async (t) => {
  const gpu = await evit.loadModel(fileOf(c0), { numHeads: c0.arch.numHeads, imgSize: 64, device: 'cuda', precision: 'f32' });
  const input = randomImages(gpu, 1, 64);
  // First pass of a shape runs eagerly, the second captures a graph, the third replays it.
  const runs = [];
  for (let i = 0; i < 3; i++) runs.push(await gpu.forward(input));
  t.ok(runs.every((r) => same(Array.from(r.logits), Array.from(runs[0].logits))), 'passes 2 and 3 (captured, replayed) bit-identical to the eager first');
  const prof = await gpu.forward(input, { profile: true });
  t.ok(same(Array.from(prof.logits), Array.from(runs[0].logits)), 'profiled pass logits identical');
  const p = prof.profile;
  t.equal(p.family, 'shunted', 'a Shunted profile');
  t.ok(p.stem > 0 && p.patchEmbed > 0 && p.stageNorm > 0 && p.head > 0, `stem ${p.stem.toFixed(3)} ms, patchEmbed ${p.patchEmbed.toFixed(3)}, stageNorm ${p.stageNorm.toFixed(3)}, head ${p.head.toFixed(3)}`);
  const ops = evit.backendInfo().profileSlots.shunted.block;
  const untimed = p.blocks.filter((b) => !ops.every((op) => b[op] > 0)).map((b) => b.block);
  t.equal(p.blocks.length, c0.arch.depths.reduce((a, b) => a + b, 0), 'one entry per block');
  t.deepEqual(untimed, [], `every block's ${ops.join(', ')} has a positive time`);
  gpu.dispose();
});
