'use strict';
// The whole model on CUDA against the CPU backend, on the test checkpoint, in every precision:
// the golden schedules (dense, keep 0.7/0.5, fused or not, 256 px), odd batch sizes, and
// batches larger than maxBatch (run in chunks).
const test = require('tape');
const { golden } = require('../helpers/fixtures');
const { LOGIT_TOL, modelPair, randomImages, fixtureInput, checkLogits, checkKept } = require('./compare');

for (const precision of ['f32', 'bf16', 'f16']) {
  const tol = LOGIT_TOL[precision];
  const exact = precision === 'f32';
  for (const c of golden.cases) {
    test(`${precision} ${c.name}: CUDA vs CPU`, async (t) => {
      const { cpu, gpu } = await modelPair(precision, { imgSize: c.imgSize, keepRate: c.keepRate, dropLoc: c.dropLoc, fuse: c.fuse });
      t.equal(gpu.backend, 'cuda', 'runs on CUDA');
      t.equal(gpu.precision, precision, `precision ${precision}`);
      const input = await fixtureInput(c.input);
      const [want, got] = await Promise.all([cpu.forward(input), gpu.forward(input)]);
      checkLogits(t, `${precision} ${c.name}`, want, got, tol);
      checkKept(t, `${precision} ${c.name}`, want, got, { exact });
      if (exact) {
        // The float64 reference too, at the CPU's own bound plus the f32 summation-order allowance.
        let worst = 0;
        c.logits.flat().forEach((v, i) => { worst = Math.max(worst, Math.abs(v - got.logits[i]) || Infinity); });
        t.ok(worst <= 1e-4 + tol, `f32 ${c.name}: logits within ${1e-4 + tol} of the float64 reference (worst ${worst.toExponential(2)})`);
      }
      cpu.dispose();
      gpu.dispose();
    });
  }

  test(`${precision}: odd batch sizes 1, 3, 7 and 13 with keep 0.7 fused`, async (t) => {
    const { cpu, gpu } = await modelPair(precision, { keepRate: 0.7, fuse: true });
    for (const [i, B] of [1, 3, 7, 13].entries()) {
      const input = randomImages(cpu, B, 100 + i);
      const [want, got] = await Promise.all([cpu.forward(input), gpu.forward(input)]);
      checkLogits(t, `${precision} batch ${B}`, want, got, tol);
      checkKept(t, `${precision} batch ${B}`, want, got, { exact });
    }
    cpu.dispose();
    gpu.dispose();
  });

  test(`${precision}: a batch over maxBatch runs in chunks with the same results`, async (t) => {
    const { cpu, gpu } = await modelPair(precision, { keepRate: 0.5, fuse: false, maxBatch: 4 });
    const input = randomImages(cpu, 11, 7);  // chunks of 4, 4, 3
    const [want, got] = await Promise.all([cpu.forward(input), gpu.forward(input)]);
    checkLogits(t, `${precision} batch 11 in chunks of 4`, want, got, tol);
    checkKept(t, `${precision} batch 11 in chunks of 4`, want, got, { exact });
    cpu.dispose();
    gpu.dispose();
  });
}

test('per-call schedules on one CUDA model: keepCounts, other drop blocks, dense', async (t) => {
  const { cpu, gpu } = await modelPair('f32', { keepRate: 0.7 });
  const input = randomImages(cpu, 3, 11);
  for (const opts of [{ keepRate: 1 }, { keepRate: 0.3, dropLoc: [0, 5, 11] }, { keepCounts: [150, 80, 9], fuse: true }, { keepRate: 0.6, fuse: false, dropLoc: [1, 2, 3, 4] }]) {
    const label = `f32 ${JSON.stringify(opts)}`;
    const [want, got] = await Promise.all([cpu.forward(input, opts), gpu.forward(input, opts)]);
    checkLogits(t, label, want, got, LOGIT_TOL.f32);
    checkKept(t, label, want, got, { exact: true });
  }
  cpu.dispose();
  gpu.dispose();
});
