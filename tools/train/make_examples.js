#!/usr/bin/env node
'use strict';
// Writes examples/<class>.png: for each class, the first Fashion-MNIST test
// image (Debian's dataset-fashion-mnist) that the bundled model classifies
// correctly at every keep rate from 1.0 to 0.5 — a clean demonstration, not
// a measure of accuracy (docs/ACCURACY.md is that).
const path = require('node:path');
const sharp = require('sharp');
const { loadModel } = require('../../dist/model');
const { loadDebianTestSet, normalisedBatch } = require('./fashion_mnist');

const OUT = path.join(__dirname, '..', '..', 'examples');
const KEEP_RATES = [1, 0.9, 0.8, 0.7, 0.6, 0.5];

const fileName = (label) => label.toLowerCase().replace(/\/.*$/, '').replace(/[^a-z0-9]+/g, '-');

async function main() {
  const model = await loadModel();
  const set = loadDebianTestSet();
  const { mean, std } = model.preprocess;
  const px = set.width * set.height;
  const chosen = new Map();
  for (let i = 0; i < set.count && chosen.size < model.labels.length; i++) {
    const label = set.labels[i];
    if (chosen.has(label)) continue;
    const x = normalisedBatch(set, i, i + 1, mean[0], std[0]);
    let ok = true;
    for (const keepRate of KEEP_RATES) {
      const out = await model.forward(x, { keepRate });
      const pred = out.logits.indexOf(Math.max(...out.logits));
      if (pred !== label) ok = false;
    }
    if (ok) chosen.set(label, i);
  }
  for (const [label, i] of [...chosen].sort((a, b) => a[0] - b[0])) {
    const file = path.join(OUT, `${fileName(model.labels[label])}.png`);
    await sharp(Buffer.from(set.images.subarray(i * px, (i + 1) * px)), { raw: { width: set.width, height: set.height, channels: 1 } })
      .png({ compressionLevel: 9 })
      .toFile(file);
    console.log(`${path.relative(process.cwd(), file)}: test image ${i} (${model.labels[label]})`);
  }
  model.dispose();
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
