'use strict';
// The whole model on CUDA against the CPU backend. f32 on the test checkpoint: the golden schedules
// (dense, keep 0.7/0.5, fused or not, 256 px) and the float64 reference, odd batch sizes, batches
// larger than maxBatch (run in chunks). f16 and bf16 on the bundled trained model over the first
// 64 images of the test slice, dense and with its trained schedule. In every precision a CUDA result does not depend
// on what else is in the batch: an image gives the same bits alone, in a batch, and in chunks.
const test = require('tape');
const { golden } = require('../helpers/fixtures');
const {
  LOGIT_TOL, REORGANISED_LOGIT_TOL, modelPair, bundledPair, randomImages, fashionImages, fixtureInput,
  checkLogits, checkKept, checkKeptAgreement,
} = require('./compare');

const tol = LOGIT_TOL.f32;

for (const c of golden.cases) {
  test(`f32 ${c.name}: CUDA vs CPU and the float64 reference`, async (t) => {
    const { cpu, gpu } = await modelPair('f32', { imgSize: c.imgSize, keepRate: c.keepRate, dropLoc: c.dropLoc, fuse: c.fuse });
    t.equal(gpu.backend, 'cuda', 'runs on CUDA');
    t.equal(gpu.precision, 'f32', 'precision f32');
    const input = await fixtureInput(c.input);
    const [want, got] = await Promise.all([cpu.forward(input), gpu.forward(input)]);
    checkLogits(t, `f32 ${c.name}`, want, got, tol);
    checkKept(t, `f32 ${c.name}`, want, got);
    // The CPU's own bound against the reference plus the f32 summation-order allowance.
    let worst = 0;
    c.logits.flat().forEach((v, i) => { worst = Math.max(worst, Math.abs(v - got.logits[i]) || Infinity); });
    t.ok(worst <= 1e-4 + tol, `f32 ${c.name}: logits within ${1e-4 + tol} of the float64 reference (worst ${worst.toExponential(2)})`);
    cpu.dispose();
    gpu.dispose();
  });
}

test('f32: odd batch sizes 1, 3 and 5 with keep 0.7 fused', async (t) => {
  const { cpu, gpu } = await modelPair('f32', { keepRate: 0.7, fuse: true });
  for (const [i, B] of [1, 3, 5].entries()) {
    const input = randomImages(cpu, B, 100 + i);
    const [want, got] = await Promise.all([cpu.forward(input), gpu.forward(input)]);
    checkLogits(t, `f32 batch ${B}`, want, got, tol);
    checkKept(t, `f32 batch ${B}`, want, got);
  }
  cpu.dispose();
  gpu.dispose();
});

test('f32: a batch over maxBatch runs in chunks with the same results', async (t) => {
  const { cpu, gpu } = await modelPair('f32', { keepRate: 0.5, fuse: false, maxBatch: 4 });
  const input = randomImages(cpu, 11, 7);  // chunks of 4, 4, 3
  const [want, got] = await Promise.all([cpu.forward(input), gpu.forward(input)]);
  checkLogits(t, 'f32 batch 11 in chunks of 4', want, got, tol);
  checkKept(t, 'f32 batch 11 in chunks of 4', want, got);
  cpu.dispose();
  gpu.dispose();
});

test('per-call schedules on one CUDA model: keepCounts, other drop blocks, dense', async (t) => {
  const { cpu, gpu } = await modelPair('f32', { keepRate: 0.7 });
  const input = randomImages(cpu, 3, 11);
  for (const opts of [{ keepRate: 1 }, { keepRate: 0.3, dropLoc: [0, 5, 11] }, { keepCounts: [150, 80, 9], fuse: true }, { keepRate: 0.6, fuse: false, dropLoc: [1, 2, 3, 4] }]) {
    const label = `f32 ${JSON.stringify(opts)}`;
    const [want, got] = await Promise.all([cpu.forward(input, opts), gpu.forward(input, opts)]);
    checkLogits(t, label, want, got, tol);
    checkKept(t, label, want, got);
  }
  cpu.dispose();
  gpu.dispose();
});

for (const precision of ['f16', 'bf16']) {
  test(`${precision}: the trained model on 64 test images, dense and at its trained keep rate`, async (t) => {
    const { cpu, gpu } = await bundledPair(precision);
    t.equal(gpu.precision, precision, `precision ${precision}`);
    const input = fashionImages(cpu, 64);
    const dense = await Promise.all([cpu.forward(input, { keepRate: 1 }), gpu.forward(input, { keepRate: 1 })]);
    checkLogits(t, `${precision} dense`, dense[0], dense[1], LOGIT_TOL[precision]);
    const kept = await Promise.all([cpu.forward(input), gpu.forward(input)]);
    t.equal(kept[0].schedule.keepRate, 0.7, 'the card\'s schedule: keep 0.7');
    checkLogits(t, `${precision} keep 0.7`, kept[0], kept[1], REORGANISED_LOGIT_TOL[precision]);
    checkKeptAgreement(t, `${precision} keep 0.7`, kept[0], kept[1], precision);
    cpu.dispose();
    gpu.dispose();
  });
}

const sameBits = (a, b) => a.length === b.length && a.every((v, i) => Object.is(v, b[i]));

for (const precision of ['f32', 'f16', 'bf16']) {
  test(`${precision}: an image gives the same bits alone, in any batch and in chunks`, async (t) => {
    const { gpu, cpu } = await modelPair(precision, { keepRate: 0.7, maxBatch: 3 });
    cpu.dispose();
    const batch = randomImages(gpu, 7, 55);  // chunks of 3, 3, 1
    const whole = await gpu.forward(batch);
    const per = batch.data.length / 7;
    const differ = [];
    for (const i of [0, 3, 6]) {
      const alone = await gpu.forward({ data: batch.data.slice(i * per, (i + 1) * per), shape: [1, ...batch.shape.slice(1)] });
      const logits = whole.logits.subarray(i * 10, (i + 1) * 10);
      const kept = whole.kept.every((k, j) => sameBits(Array.from(k.tokens.subarray(i * k.shape[1], (i + 1) * k.shape[1])), Array.from(alone.kept[j].tokens)));
      if (!sameBits(Array.from(logits), Array.from(alone.logits)) || !kept) differ.push(i);
    }
    t.deepEqual(differ, [], `${precision}: images 0, 3 and 6 of a chunked batch of 7 match their own one-image passes bit for bit`);
    gpu.dispose();
  });
}
