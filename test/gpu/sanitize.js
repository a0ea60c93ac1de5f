'use strict';
// A small CUDA workload for compute-sanitizer (memcheck, racecheck): every precision, dense and
// reorganising plans, fused and not, the eager pass, a graph capture and its replay, a profiled
// pass, two batches in flight, chunked batches, and dispose; and the same for a Shunted Transformer
// (every kernel of that family, at 64 px). Exits non-zero on any error.
// tools/gpu-check.sh runs it as: compute-sanitizer --tool memcheck node test/gpu/sanitize.js
const { loadModel } = require('../../dist');
const { tinyModel, tinyOptions } = require('../helpers/fixtures');
const { golden, shuntedFixture } = require('../helpers/shuntedFixtures');
const { randomImages } = require('./compare');

async function main() {
  for (const precision of ['f32', 'bf16', 'f16']) {
    const m = await loadModel(tinyModel, { ...tinyOptions, device: 'cuda', precision, maxBatch: 4, streams: 2 });
    const input = randomImages(m, 3, 1);
    for (const opts of [{ keepRate: 0.7, fuse: true }, { keepRate: 0.5, fuse: false, dropLoc: [0, 1, 11] }, { keepRate: 1 }]) {
      for (let i = 0; i < 3; i++) await m.forward(input, opts);  // eager, capture, replay
      await m.forward(input, { ...opts, profile: true });
    }
    await Promise.all([m.forward(input), m.forward(randomImages(m, 6, 2), { keepRate: 0.5 })]);  // 6 > maxBatch: chunks
    const last = await m.forward(randomImages(m, 1, 3));
    if (!last.logits.every(Number.isFinite)) throw new Error(`${precision}: non-finite logits`);
    m.dispose();
    const c2 = golden.models[1];
    const s = await loadModel(shuntedFixture(c2.files.safetensors), { numHeads: c2.arch.numHeads, imgSize: 64, device: 'cuda', precision, maxBatch: 2, streams: 2 });
    const images = randomImages(s, 3, 4);  // chunks of 2 and 1
    for (let i = 0; i < 3; i++) await s.forward(images);  // eager, capture, replay
    await s.forward(images, { profile: true });
    const both = await Promise.all([s.forward(images), s.forward(randomImages(s, 1, 5))]);
    if (!both.every((r) => r.logits.every(Number.isFinite))) throw new Error(`${precision}: non-finite Shunted logits`);
    s.dispose();
    console.log(`${precision}: ok`);
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
