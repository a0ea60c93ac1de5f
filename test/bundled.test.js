'use strict';
// The bundled Fashion-MNIST model: its model card, the shipped examples and its
// accuracy on the committed 500-image test slice.
const test = require('tape');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const sharp = require('sharp');
const { loadModel } = require('../dist/model');
const { preprocessBatch } = require('../dist/preprocess');
const { BUNDLED_MODEL } = require('../dist/bundled');
const { loadTestSlice, normalisedBatch } = require('../tools/train/fashion_mnist');

const ROOT = path.join(__dirname, '..');
const card = JSON.parse(fs.readFileSync(path.join(path.dirname(BUNDLED_MODEL), 'config.json'), 'utf8'));
const cli = path.join(ROOT, 'dist', 'cli.js');

// A few points under what `npm run eval` measured on the full test set (docs/ACCURACY.md).
const MIN_TOP1_DENSE = 0.835;
const MIN_TOP1_KEEP07 = 0.83;

const fileName = (label) => label.toLowerCase().replace(/\/.*$/, '').replace(/[^a-z0-9]+/g, '-');
const examples = card.labels
  .map((label) => ({ label, file: path.join(ROOT, 'examples', `${fileName(label)}.png`) }))
  .filter((e) => fs.existsSync(e.file));

function argmax(logits, classes, i) {
  let best = 0;
  for (let c = 1; c < classes; c++) if (logits[i * classes + c] > logits[i * classes + best]) best = c;
  return best;
}

test('loadModel() with no path loads the bundled model with its card', async (t) => {
  const model = await loadModel();
  try {
    t.deepEqual(model.labels, card.labels, 'labels from config.json');
    t.equal(model.architecture.inChans, 1);
    t.equal(model.imgSize, card.preprocess.imgSize);
    t.equal(model.architecture.numHeads, card.architecture.numHeads, 'heads from the card');
    t.deepEqual(model.preprocess.mean, card.preprocess.mean);
    t.deepEqual(model.preprocess.std, card.preprocess.std);
    t.equal(model.preprocess.channels, 1);
    t.equal(model.schedule.keepRate, card.schedule.keepRate, 'default keep rate from the card');
    t.deepEqual(model.schedule.dropBlocks, card.schedule.dropLoc);
    t.equal(model.schedule.fused, card.schedule.fuse);
  } finally {
    model.dispose();
  }
});

test('explicit options override the card; card: false ignores it', async (t) => {
  const names = card.labels.map((_, i) => `c${i}`);
  const a = await loadModel(undefined, { keepRate: 0.5, dropLoc: [1], fuse: false, labels: names, preprocess: { mean: [0.5], std: [0.25] } });
  t.equal(a.schedule.keepRate, 0.5);
  t.deepEqual(a.schedule.dropBlocks, [1]);
  t.equal(a.schedule.fused, false);
  t.deepEqual(a.labels, names);
  t.deepEqual(a.preprocess.mean, [0.5]);
  t.deepEqual(a.preprocess.std, [0.25]);
  a.dispose();
  const b = await loadModel(BUNDLED_MODEL, { card: false, numHeads: card.architecture.numHeads });
  t.equal(b.labels, null, 'no labels without the card');
  t.notDeepEqual(b.preprocess.mean, card.preprocess.mean, 'default statistics without the card');
  t.deepEqual(b.schedule.dropBlocks, card.schedule.dropLoc, 'the schedule still comes from the checkpoint metadata');
  b.dispose();
});

test('a malformed card is a typed error naming the field', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'evit-card-'));
  try {
    const weights = path.join(dir, 'model.safetensors');
    fs.copyFileSync(BUNDLED_MODEL, weights);
    const cases = [
      ['{not json', /not valid JSON/],
      [JSON.stringify({ ...card, labels: ['a', 'b'] }), /has 2 labels but the model has 10 classes/],
      [JSON.stringify({ ...card, schedule: { keepRate: 2 } }), /schedule\.keepRate must be a number in \(0, 1\]/],
      [JSON.stringify({ ...card, preprocess: { ...card.preprocess, interpolation: 'nearest' } }), /interpolation/],
      [JSON.stringify({ ...card, preprocess: { ...card.preprocess, channels: 3 } }), /says 3 channels but the weights take 1/],
      [JSON.stringify({ ...card, preprocess: { ...card.preprocess, mean: 'grey' } }), /preprocess\.mean must be a non-empty array/],
    ];
    for (const [text, re] of cases) {
      fs.writeFileSync(path.join(dir, 'config.json'), text);
      try {
        (await loadModel(weights)).dispose();
        t.fail(`accepted ${text.slice(0, 40)}`);
      } catch (err) {
        t.equal(err.code, 'EVIT_BAD_WEIGHTS', err.message);
        t.match(err.message, re);
      }
    }
    try {
      await loadModel(weights, { card: path.join(dir, 'missing.json') });
      t.fail('a named card that does not exist was ignored');
    } catch (err) {
      t.equal(err.code, 'EVIT_BAD_WEIGHTS');
      t.match(err.message, /missing\.json/);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('the shipped examples are real test images the model classifies correctly', async (t) => {
  t.ok(examples.length >= 5, `${examples.length} examples shipped`);
  const model = await loadModel();
  try {
    for (const keepRate of [1, 0.7, 0.5]) {
      const res = await model.classify(examples.map((e) => e.file), { keepRate, top: 1 });
      res.forEach((r, i) => t.equal(r.top[0].label, examples[i].label, `${path.basename(examples[i].file)} at keep ${keepRate}`));
    }
  } finally {
    model.dispose();
  }
});

test('preprocessing a 28x28 example equals normalising its pixels as the card says', async (t) => {
  const model = await loadModel();
  try {
    const file = examples[0].file;
    const { data, info } = await sharp(file).raw().toBuffer({ resolveWithObject: true });
    t.equal(info.width, 28);
    const batch = await preprocessBatch([file], model.preprocess);
    t.deepEqual(batch.shape, [1, 1, 28, 28]);
    let worst = 0;
    for (let i = 0; i < 784; i++) {
      const want = (data[i * info.channels] / 255 - card.preprocess.mean[0]) / card.preprocess.std[0];
      worst = Math.max(worst, Math.abs(batch.data[i] - want));
    }
    t.ok(worst < 1e-6, `max difference ${worst}`);
  } finally {
    model.dispose();
  }
});

test('images of any size and colour become the 28x28 greyscale input', async (t) => {
  const sneaker = examples.find((e) => e.label === 'Sneaker') ?? examples[0];
  // A larger colour version of the example: upscaled, tinted, with a non-square canvas.
  const big = await sharp(sneaker.file)
    .resize(112, 112, { kernel: 'cubic' })
    .toColourspace('srgb')
    .tint({ r: 255, g: 230, b: 200 })
    .extend({ left: 16, right: 16, background: { r: 0, g: 0, b: 0 } })
    .png()
    .toBuffer();
  const meta = await sharp(big).metadata();
  t.equal(meta.width, 144);
  t.equal(meta.channels >= 3, true, 'the input is colour');
  const model = await loadModel();
  try {
    const batch = await preprocessBatch([big], model.preprocess);
    t.deepEqual(batch.shape, [1, 1, 28, 28], 'one channel, 28x28');
    const [res] = await model.classify([big], { top: 1 });
    t.equal(res.top[0].label, sneaker.label, 'still classified correctly');
  } finally {
    model.dispose();
  }
});

test('`evit classify IMAGE` with no --weights uses the bundled model', (t) => {
  const e = examples.find((x) => x.label === 'Sneaker') ?? examples[0];
  const r = spawnSync(process.execPath, [cli, 'classify', '--top', '1', e.file], { encoding: 'utf8' });
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, new RegExp(`%\\s+${e.label.replace('/', '\\/')}`), r.stdout);
  t.end();
});

test('accuracy on the 500-image test slice, dense and at keep 0.7', async (t) => {
  const set = loadTestSlice();
  t.equal(set.count, 500);
  const model = await loadModel();
  try {
    const { mean, std } = model.preprocess;
    const x = normalisedBatch(set, 0, set.count, mean[0], std[0]);
    const classes = model.architecture.numClasses;
    for (const [keepRate, min] of [[1, MIN_TOP1_DENSE], [0.7, MIN_TOP1_KEEP07]]) {
      const out = await model.forward(x, { keepRate });
      let correct = 0;
      for (let i = 0; i < set.count; i++) if (argmax(out.logits, classes, i) === set.labels[i]) correct++;
      t.ok(correct / set.count >= min, `keep ${keepRate}: top-1 ${(correct / 5).toFixed(1)}% ≥ ${min * 100}%`);
    }
  } finally {
    model.dispose();
  }
});

test('`evit inspect` takes the head count from the card beside the weights', (t) => {
  const r = spawnSync(process.execPath, [cli, 'inspect', '--json', BUNDLED_MODEL], { encoding: 'utf8' });
  t.equal(r.status, 0, r.stderr);
  const report = JSON.parse(r.stdout);
  t.equal(report.architecture.numHeads, card.architecture.numHeads);
  t.equal(report.architecture.embedDim, card.architecture.embedDim);
  t.equal(report.architecture.inChans, 1);
  t.end();
});
