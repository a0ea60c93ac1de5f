'use strict';
// DeiT III backbones: LayerScale and a position embedding without a class-token slot,
// run as the equivalent DeiT and checked against a float64 reference that implements them literally.
const test = require('tape');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { loadModel, readNpy, parseSafetensors, WeightsError } = require('../dist');
const { readCheckpoint } = require('../dist/weights/checkpoint');
const { detectVariant, toDeitLayout } = require('../dist/weights/deit3');
const { toSafetensors } = require('../dist/commands/convert');

const fx = (name) => path.join(__dirname, 'fixtures', 'pth', name);
const golden = require('./fixtures/pth/golden.json');
const NUM_HEADS = golden.model.numHeads;

const tensor = (shape, values) => ({ shape, data: Float32Array.from(values) });

async function checkAgainstReference(t, file) {
  const x = await readNpy(fx(golden.input));
  const model = await loadModel(file, { numHeads: NUM_HEADS, dropLoc: [1, 2], card: false });
  for (const c of golden.deit3.cases) {
    const out = await model.forward(x, { keepRate: c.keepRate, dropLoc: c.dropLoc, fuse: c.fuse });
    const diff = Math.max(...c.logits.flat().map((v, i) => Math.abs(v - out.logits[i])));
    t.ok(diff < 1e-4, `${path.basename(file)} ${c.name}: logits within 1e-4 of the literal DeiT III reference (${diff.toExponential(2)})`);
    const kept = out.kept.map((k) => [0, 1].map((b) => Array.from(k.tokens.subarray(b * k.shape[1], (b + 1) * k.shape[1]))));
    t.deepEqual(kept, c.kept.map((k) => k.tokens), `${path.basename(file)} ${c.name}: identical kept tokens`);
    t.deepEqual(out.schedule.tokenCounts.filter((_, i) => c.dropLoc.includes(i)), c.tokenCounts, `${c.name}: token counts`);
  }
  model.dispose();
}

test('DeiT III with gamma_1/gamma_2 matches the float64 reference', (t) => checkAgainstReference(t, fx('deit3-mini.pth')));

test('DeiT III with timm names (ls1.gamma, module. prefix, pickle protocol 4) matches the same reference', (t) =>
  checkAgainstReference(t, fx('deit3-mini-timm.pth')));

test('at 48 px the class-slot-free position grid is resized like the reference resizes it', async (t) => {
  const g = golden.deit3_48;
  const x = await readNpy(fx(g.input));
  const [c] = g.cases;
  for (const file of golden.deit3.files) {
    const model = await loadModel(fx(file), { numHeads: NUM_HEADS, dropLoc: c.dropLoc, keepRate: c.keepRate, fuse: c.fuse, imgSize: g.imgSize, card: false });
    const out = await model.forward(x);
    const diff = Math.max(...c.logits.flat().map((v, i) => Math.abs(v - out.logits[i])));
    t.ok(diff < 1e-4, `${file}: logits within 1e-4 (${diff.toExponential(2)})`);
    const kept = out.kept.map((k) => [0, 1].map((b) => Array.from(k.tokens.subarray(b * k.shape[1], (b + 1) * k.shape[1]))));
    t.deepEqual(kept, c.kept.map((k) => k.tokens), `${file}: identical kept tokens`);
    model.dispose();
  }
  t.end();
});

test('the variant is recognised from tensor names and the position embedding shape', async (t) => {
  const d3 = detectVariant((await readCheckpoint(fx('deit3-mini.pth'))).tensors);
  t.deepEqual(d3, { variant: 'deit3', layerScale: 'gamma_1/gamma_2', posEmbedClassSlot: false });
  const timm = detectVariant((await readCheckpoint(fx('deit3-mini-timm.pth'))).tensors);
  t.deepEqual(timm, { variant: 'deit3', layerScale: 'ls1.gamma/ls2.gamma', posEmbedClassSlot: false });
  const deit = detectVariant((await readCheckpoint(fx('deit-mini.pth'))).tensors);
  t.deepEqual(deit, { variant: 'deit', layerScale: null, posEmbedClassSlot: true });
  const { tensors } = await readCheckpoint(fx('deit-mini.pth'));
  t.equal(toDeitLayout(tensors).tensors, tensors, 'a DeiT checkpoint passes through untouched');
  t.end();
});

test('LayerScale folds into the linear layer before it; the position embedding gains a zero class row', (t) => {
  // proj: 2 outputs, 3 inputs. Literal DeiT III: gamma * (W x + b).
  const W = [1, 2, 3, -4, 5, -6];
  const b = [0.5, -1.5];
  const gamma = [0.25, -2];
  const pos = [1, 2, 3, 4, 5, 6, 7, 8]; // [1, 4, 2]: a 2x2 grid of 2 channels
  const input = new Map([
    ['pos_embed', tensor([1, 4, 2], pos)],
    ['blocks.0.gamma_1', tensor([2], gamma)],
    ['blocks.0.attn.proj.weight', tensor([2, 3], W)],
    ['blocks.0.attn.proj.bias', tensor([2], b)],
    ['blocks.0.mlp.fc2.weight', tensor([2, 3], W)],
    ['blocks.0.mlp.fc2.bias', tensor([2], b)],
  ]);
  const { tensors, info } = toDeitLayout(input);
  t.equal(info.variant, 'deit3');
  t.notOk(tensors.has('blocks.0.gamma_1'), 'gamma is consumed');
  const x = [0.3, -0.7, 2];
  const literal = [0, 1].map((r) => gamma[r] * (W[3 * r] * x[0] + W[3 * r + 1] * x[1] + W[3 * r + 2] * x[2] + b[r]));
  const fw = tensors.get('blocks.0.attn.proj.weight').data;
  const fb = tensors.get('blocks.0.attn.proj.bias').data;
  const folded = [0, 1].map((r) => fw[3 * r] * x[0] + fw[3 * r + 1] * x[1] + fw[3 * r + 2] * x[2] + fb[r]);
  folded.forEach((v, r) => t.ok(Math.abs(v - literal[r]) < 1e-6, `row ${r}: folded ${v} = literal ${literal[r]}`));
  t.deepEqual(Array.from(tensors.get('blocks.0.mlp.fc2.weight').data), W, 'fc2 without gamma_2 is unchanged');
  t.deepEqual(Array.from(input.get('blocks.0.attn.proj.weight').data), W, 'the input tensors are not modified');
  t.deepEqual(tensors.get('pos_embed').shape, [1, 5, 2]);
  t.deepEqual(Array.from(tensors.get('pos_embed').data), [0, 0, ...pos], 'zero class-token row, then the grid');
  t.end();
});

test('inconsistent LayerScale is a WeightsError naming the tensors', (t) => {
  const base = () => new Map([
    ['blocks.0.attn.proj.weight', tensor([2, 2], [1, 2, 3, 4])],
    ['blocks.0.attn.proj.bias', tensor([2], [0, 0])],
  ]);
  const wrongShape = base();
  wrongShape.set('blocks.0.gamma_1', tensor([3], [1, 1, 1]));
  t.throws(() => toDeitLayout(wrongShape), (e) => e instanceof WeightsError && /LayerScale of blocks\.0\.attn\.proj has shape \[3\], expected \[2\]/.test(e.message));
  const both = base();
  both.set('blocks.0.gamma_1', tensor([2], [1, 1]));
  both.set('blocks.1.ls1.gamma', tensor([2], [1, 1]));
  t.throws(() => toDeitLayout(both), (e) => e instanceof WeightsError && /both as blocks\.N\.gamma_1\/gamma_2 and as blocks\.N\.ls1\.gamma/.test(e.message));
  const orphan = new Map([['blocks.2.ls2.gamma', tensor([2], [1, 1])]]);
  t.throws(() => toDeitLayout(orphan), (e) => e instanceof WeightsError && /LayerScale for blocks\.2\.mlp\.fc2 is present but blocks\.2\.mlp\.fc2\.weight is missing/.test(e.message));
  t.end();
});

test('converted to safetensors, DeiT III keeps its own tensor names and the same logits', async (t) => {
  const ckpt = await readCheckpoint(fx('deit3-mini.pth'));
  const st = parseSafetensors(toSafetensors(ckpt, 'deit3-mini.pth'));
  t.ok(st.tensors.has('blocks.3.gamma_2'), 'LayerScale kept as tensors');
  t.deepEqual(st.tensors.get('pos_embed').shape, [1, 16, 16], 'pos_embed kept without a class slot');
  const file = path.join(os.tmpdir(), `evit-deit3-${process.pid}.safetensors`);
  fs.writeFileSync(file, toSafetensors(ckpt, 'deit3-mini.pth'));
  const x = await readNpy(fx(golden.input));
  const a = await loadModel(file, { numHeads: NUM_HEADS, dropLoc: [1, 2], card: false });
  const b = await loadModel(fx('deit3-mini.pth'), { numHeads: NUM_HEADS, dropLoc: [1, 2], card: false });
  const [ra, rb] = [await a.forward(x), await b.forward(x)];
  t.ok(Buffer.from(ra.logits.buffer).equals(Buffer.from(rb.logits.buffer)), 'bit-identical logits');
  a.dispose();
  b.dispose();
  fs.rmSync(file, { force: true });
  t.end();
});
