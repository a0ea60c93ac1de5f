'use strict';
// A fixed CUDA workload whose results are printed as one SHA-256: every precision, dense and
// reorganising, fused or not, chunked and in flight together, and a Shunted Transformer. Run under each thread order of the
// SIMT emulator (EVIT_SIMT_SCHEDULE), the digests must be equal: a race between a block's threads
// that the tests' tolerances would forgive still changes a bit somewhere.
const crypto = require('node:crypto');
const { loadModel } = require('../../dist');
const { tinyModel, tinyOptions } = require('../helpers/fixtures');
const { golden, shuntedFixture } = require('../helpers/shuntedFixtures');
const { randomImages, fashionImages } = require('./compare');

async function main() {
  const hash = crypto.createHash('sha256');
  const add = (out) => {
    hash.update(Buffer.from(out.logits.buffer, out.logits.byteOffset, out.logits.byteLength));
    for (const k of out.kept) hash.update(Buffer.from(k.tokens.buffer, k.tokens.byteOffset, k.tokens.byteLength));
  };
  for (const precision of ['f32', 'f16', 'bf16']) {
    const tiny = await loadModel(tinyModel, { ...tinyOptions, device: 'cuda', precision, maxBatch: 2, streams: 2 });
    const a = randomImages(tiny, 3, 1);
    for (const opts of [{ keepRate: 0.7 }, { keepRate: 0.5, fuse: false, dropLoc: [0, 5, 11] }, { keepRate: 1 }])
      (await Promise.all([tiny.forward(a, opts), tiny.forward(randomImages(tiny, 1, 2), opts)])).forEach(add);
    tiny.dispose();
    const bundled = await loadModel(undefined, { device: 'cuda', precision });
    add(await bundled.forward(fashionImages(bundled, 8)));
    bundled.dispose();
    const c0 = golden.models[0];
    const shunted = await loadModel(shuntedFixture(c0.files['pth-model']), { numHeads: c0.arch.numHeads, imgSize: 64, device: 'cuda', precision });
    add(await shunted.forward(randomImages(shunted, 2, 3)));
    shunted.dispose();
  }
  process.stdout.write(`${hash.digest('hex')}\n`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
