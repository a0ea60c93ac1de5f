'use strict';
// One resolver decides what a model is (architecture, input size, schedule, preprocessing, labels) from
// the checkpoint, its model card and the options: loadModel and `evit inspect` must agree on it.
const test = require('tape');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const evit = require('../dist');
const { resolveModelSpec, describeArchitecture } = require('../dist/spec');
const { readCheckpoint } = require('../dist/weights/checkpoint');
const { parseModelCard } = require('../dist/weights/modelCard');
const { tinyModel } = require('./helpers/fixtures');

const cli = path.join(__dirname, '..', 'dist', 'cli.js');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'evit-spec-'));
test.onFinish(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** The tiny fixture (embed 48, depth 12, 3 heads: no named arch) with `metadata`, and `card` as config.json beside it. */
function modelDir(name, metadata, card) {
  const dir = path.join(tmp, name);
  fs.mkdirSync(dir);
  const { tensors } = evit.parseSafetensors(fs.readFileSync(tinyModel));
  const m = new Map([...tensors].map(([n, t]) => [n, { dtype: 'F32', shape: t.shape, data: t.data }]));
  fs.writeFileSync(path.join(dir, 'model.safetensors'), evit.serializeSafetensors(m, metadata));
  if (card) fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(card));
  return path.join(dir, 'model.safetensors');
}

function inspect(file) {
  const r = spawnSync(process.execPath, [cli, 'inspect', '--json', file], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(r.stderr);
  return JSON.parse(r.stdout);
}

/** What loadModel makes of the file with no options: the head count, or the error's code and message. */
async function load(file) {
  try {
    const m = await evit.loadModel(file);
    const heads = m.architecture.numHeads;
    m.dispose();
    return { heads };
  } catch (e) {
    return { code: e.code, message: e.message };
  }
}

test('loadModel and `evit inspect` decide the architecture alike', async (t) => {
  const cases = [
    { name: 'card-heads', metadata: {}, card: { architecture: { numHeads: 3 } } },
    // A stored arch name comes before the card's head count; an unknown one cannot say the heads.
    { name: 'unknown-arch', metadata: { arch: 'deit_huge' }, card: { architecture: { numHeads: 3 } } },
    // The card's arch name comes before its head count, and is checked against the tensors.
    { name: 'card-arch', metadata: {}, card: { architecture: { name: 'deit_small_patch16_224', numHeads: 3 } } },
    { name: 'stored-arch', metadata: { arch: 'deit_tiny_patch16_224' }, card: null },
    { name: 'nothing', metadata: {}, card: null },
  ];
  for (const c of cases) {
    const file = modelDir(c.name, c.metadata, c.card);
    const report = inspect(file);
    const loaded = await load(file);
    if (loaded.heads !== undefined) {
      t.equal(report.architecture.numHeads, loaded.heads, `${c.name}: inspect reports the ${loaded.heads} heads loadModel runs`);
    } else if (loaded.code === 'EVIT_BAD_OPTIONS') {
      // Options could still make it run (--heads, --arch): inspect reports the dimensions, heads unknown.
      t.equal(report.architecture?.numHeads, null, `${c.name}: loadModel needs options (${loaded.message}); inspect: heads unknown`);
      t.equal(report.architecture?.embedDim, 48, `${c.name}: the dimensions are still reported`);
    } else {
      t.equal(report.architecture, null, `${c.name}: neither runs it`);
      t.equal(report.architectureError, loaded.message, `${c.name}: for the same reason: ${loaded.message}`);
    }
  }
  t.end();
});

test('the spec: options win over the card, the card over the checkpoint metadata', async (t) => {
  const file = modelDir('precedence', { 'evit.keep_rate': '0.5', 'evit.drop_loc': '2,5', 'evit.fuse': 'false' });
  const ckpt = await readCheckpoint(file);
  const card = parseModelCard({
    architecture: { numHeads: 3 },
    preprocess: { imgSize: 112, resizeSize: 128, mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25] },
    labels: Array.from({ length: 10 }, (_, i) => `class ${i}`),
    schedule: { keepRate: 0.6 },
  }, 'config.json');

  const fromCard = resolveModelSpec(ckpt, card, {}, file);
  t.equal(fromCard.architecture.numHeads, 3, 'heads from the card');
  t.deepEqual([fromCard.imgSize, fromCard.grid], [112, 7], 'input size from the card');
  t.deepEqual([fromCard.schedule.keepRate, fromCard.schedule.dropLoc, fromCard.schedule.fuse], [0.6, [2, 5], false],
    'keep rate from the card, drop blocks and fusion from the metadata the card does not override');
  t.deepEqual([fromCard.preprocess.resizeSize, fromCard.preprocess.cropPct], [128, 112 / 128], "the card's resize");
  t.equal(fromCard.labels, card.labels, "the card's labels");

  const labels = Array.from({ length: 10 }, (_, i) => `mine ${i}`);
  const fromOptions = resolveModelSpec(ckpt, card, { numHeads: 4, imgSize: 64, keepRate: 0.9, dropLoc: [1], labels }, file);
  t.equal(fromOptions.architecture.numHeads, 4, 'heads from the options');
  t.deepEqual([fromOptions.imgSize, fromOptions.grid], [64, 4], 'input size from the options');
  t.deepEqual([fromOptions.schedule.keepRate, fromOptions.schedule.dropLoc], [0.9, [1]], 'schedule from the options');
  // The card's resize was chosen for 112 px: at 64 px only its crop fraction is kept.
  t.deepEqual([fromOptions.preprocess.resizeSize, fromOptions.preprocess.cropPct], [Math.round(64 / (112 / 128)), 112 / 128], 'crop fraction kept');
  t.equal(fromOptions.labels, labels, 'labels from the options');

  const bare = resolveModelSpec(ckpt, null, { numHeads: 3 }, file);
  t.deepEqual([bare.imgSize, bare.schedule.keepRate, bare.schedule.dropLoc, bare.labels], [224, 0.5, [2, 5], null],
    'without a card: the checkpoint size and the metadata schedule');

  const described = describeArchitecture(ckpt, card);
  t.deepEqual([described.architecture.numHeads, described.architecture.imgSize], [3, 224],
    'describing the checkpoint: heads as loaded, the size of its own position grid');
  t.end();
});
