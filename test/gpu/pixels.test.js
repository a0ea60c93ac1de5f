'use strict';
// uint8 images on CUDA: uploaded from the context's pinned staging buffer and normalised on the
// device, they give the float32 tensor's logits and kept tokens bit for bit in every precision
// (the patch columns are the same values), in one chunk and in several; classify of the examples
// agrees with the CPU backend.
const test = require('tape');
const path = require('node:path');
const { preprocessBatch, preprocessPixels } = require('../../dist');
const { LOGIT_TOL, REORGANISED_LOGIT_TOL, modelPair, bundledPair, checkLogits, checkKept } = require('./compare');

const examples = path.join(__dirname, '..', '..', 'examples');
const images = ['sneaker', 'bag', 'coat', 'shapes', 'dress'].map((n) => path.join(examples, `${n}.png`));
const bits = (f32) => Buffer.from(f32.buffer, f32.byteOffset, f32.byteLength);
const sameKept = (a, b) => a.length === b.length && a.every((k, i) => k.block === b[i].block && bits(k.tokens).equals(bits(b[i].tokens)));

for (const precision of ['f32', 'f16', 'bf16']) {
  test(`${precision}: uint8 images give the float32 images' results bit for bit, in chunks of 2 (batch 5)`, async (t) => {
    const { cpu, gpu } = await modelPair(precision, { keepRate: 0.7, maxBatch: 2 });
    t.equal(gpu.backend, 'cuda', 'runs on CUDA');
    const f32 = await preprocessBatch(images, gpu.preprocess);
    const px = await preprocessPixels(images, gpu.preprocess);
    for (let pass = 0; pass < 3; pass++) {  // eager, captured, replayed
      const [a, b] = [await gpu.forward(f32), await gpu.forward(px)];
      t.ok(bits(a.logits).equals(bits(b.logits)) && sameKept(a.kept, b.kept),
        `${precision} pass ${pass + 1}: uint8 logits and kept tokens equal float32's (batch 5 in chunks of 2)`);
    }
    if (precision === 'f32') {
      const [want, got] = await Promise.all([cpu.forward(px), gpu.forward(px)]);
      checkLogits(t, 'f32 uint8 vs CPU uint8', want, got, LOGIT_TOL.f32);
      checkKept(t, 'f32 uint8 vs CPU uint8', want, got);
    }
    cpu.dispose();
    gpu.dispose();
  });
}

test('classify of the examples (uint8 path) on CUDA agrees with the CPU', async (t) => {
  const { cpu, gpu } = await bundledPair('f16');
  const [want, got] = await Promise.all([cpu.classify(images, { top: 1 }), gpu.classify(images, { top: 1 })]);
  t.deepEqual(got.map((r) => r.top[0].label), want.map((r) => r.top[0].label), `top-1 labels: ${want.map((r) => r.top[0].label).join(', ')}`);
  const worst = Math.max(...got.flatMap((r, i) => r.logits.map((v, k) => Math.abs(v - want[i].logits[k]))));
  t.ok(worst <= REORGANISED_LOGIT_TOL.f16, `f16 classify logits within ${REORGANISED_LOGIT_TOL.f16} of the CPU's (worst ${worst.toExponential(2)}, the trained schedule reorganises)`);
  cpu.dispose();
  gpu.dispose();
});
