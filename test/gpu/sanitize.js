'use strict';
// A small CUDA workload for compute-sanitizer (memcheck, racecheck): every precision, dense and
// reorganising plans, fused and not, the eager pass, a graph capture and its replay, a profiled
// pass, two batches in flight, chunked batches, and dispose. Exits non-zero on any error.
// tools/gpu-check.sh runs it as: compute-sanitizer --tool memcheck node test/gpu/sanitize.js
const { loadModel } = require('../../dist');
const { tinyModel, tinyOptions } = require('../helpers/fixtures');
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
    console.log(`${precision}: ok`);
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
