'use strict';
const test = require('tape');
const path = require('node:path');
const fs = require('node:fs');
const { inferArchitecture, requiredTensors, NAMED_ARCHS } = require('../dist/weights/architecture');
const { readSafetensors } = require('../dist/weights/safetensors');
const { WeightsError, OptionsError } = require('../dist/errors');

const FIXTURE = path.join(__dirname, 'fixtures', 'tiny-evit.safetensors');

function tensor(shape) {
  return { shape, data: new Float32Array(shape.reduce((a, b) => a * b, 1)) };
}

/** A synthetic timm-named DeiT checkpoint (zeros) with the given dimensions. */
function makeTensors({ C = 48, depth = 2, p = 16, inChans = 3, grid = 14, classes = 10, hidden = 4 * C } = {}) {
  const m = new Map();
  m.set('cls_token', tensor([1, 1, C]));
  m.set('pos_embed', tensor([1, 1 + grid * grid, C]));
  m.set('patch_embed.proj.weight', tensor([C, inChans, p, p]));
  m.set('patch_embed.proj.bias', tensor([C]));
  for (let i = 0; i < depth; i++) {
    const b = `blocks.${i}.`;
    m.set(`${b}norm1.weight`, tensor([C]));
    m.set(`${b}norm1.bias`, tensor([C]));
    m.set(`${b}attn.qkv.weight`, tensor([3 * C, C]));
    m.set(`${b}attn.qkv.bias`, tensor([3 * C]));
    m.set(`${b}attn.proj.weight`, tensor([C, C]));
    m.set(`${b}attn.proj.bias`, tensor([C]));
    m.set(`${b}norm2.weight`, tensor([C]));
    m.set(`${b}norm2.bias`, tensor([C]));
    m.set(`${b}mlp.fc1.weight`, tensor([hidden, C]));
    m.set(`${b}mlp.fc1.bias`, tensor([hidden]));
    m.set(`${b}mlp.fc2.weight`, tensor([C, hidden]));
    m.set(`${b}mlp.fc2.bias`, tensor([C]));
  }
  m.set('norm.weight', tensor([C]));
  m.set('norm.bias', tensor([C]));
  m.set('head.weight', tensor([classes, C]));
  m.set('head.bias', tensor([classes]));
  return m;
}

/** Asserts fn throws an error of class Cls (with code) whose message matches re. */
function throwsWith(t, fn, Cls, code, re, label) {
  let err = null;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  t.ok(err instanceof Cls, `${label}: throws ${Cls.name}${err && !(err instanceof Cls) ? ` (got ${err})` : ''}`);
  t.equal(err && err.code, code, `${label}: code ${code}`);
  t.match(err ? err.message : '', re, `${label}: message ${re}`);
}

const bad = (t, fn, re, label) => throwsWith(t, fn, WeightsError, 'EVIT_BAD_WEIGHTS', re, label);
const badOpt = (t, fn, re, label) => throwsWith(t, fn, OptionsError, 'EVIT_BAD_OPTIONS', re, label);

test('NAMED_ARCHS', (t) => {
  t.deepEqual(NAMED_ARCHS.deit_tiny_patch16_224, { embedDim: 192, depth: 12, numHeads: 3, patchSize: 16 }, 'tiny');
  t.deepEqual(NAMED_ARCHS.deit_small_patch16_224, { embedDim: 384, depth: 12, numHeads: 6, patchSize: 16 }, 'small');
  t.deepEqual(NAMED_ARCHS.deit_base_patch16_224, { embedDim: 768, depth: 12, numHeads: 12, patchSize: 16 }, 'base');
  t.end();
});

test('infers every dimension from the tensors, heads from numHeads', (t) => {
  const a = inferArchitecture(makeTensors({ C: 48, depth: 2, classes: 10 }), { numHeads: 4 });
  t.deepEqual(a, {
    embedDim: 48, depth: 2, numHeads: 4, patchSize: 16, inChans: 3, gridSize: [14, 14],
    numClasses: 10, mlpHidden: 192, arch: null,
  }, 'architecture');

  const b = inferArchitecture(makeTensors({ C: 24, depth: 3, p: 8, inChans: 1, grid: 4, classes: 7, hidden: 40 }), { numHeads: 2 });
  t.deepEqual(b, {
    embedDim: 24, depth: 3, numHeads: 2, patchSize: 8, inChans: 1, gridSize: [4, 4],
    numClasses: 7, mlpHidden: 40, arch: null,
  }, 'odd sizes: patch 8, 1 channel, 4x4 grid, 7 classes, hidden 40');

  const m = makeTensors();
  m.set('dist_token_unused', tensor([1, 1, 48]));
  m.set('some.extra.thing', tensor([5]));
  t.equal(inferArchitecture(m, { numHeads: 3 }).numHeads, 3, 'unknown extra tensors are ignored');
  t.end();
});

test('heads from a named arch or from matching dimensions', (t) => {
  const tiny = makeTensors({ C: 192, depth: 12, classes: 5, grid: 2 });
  const byDims = inferArchitecture(tiny);
  t.equal(byDims.numHeads, 3, 'dims match deit_tiny: 3 heads');
  t.equal(byDims.arch, 'deit_tiny_patch16_224', 'arch name reported');
  t.equal(byDims.numClasses, 5, 'classes from head.weight');
  t.deepEqual(byDims.gridSize, [2, 2], 'grid from pos_embed');

  const byName = inferArchitecture(tiny, { arch: 'deit_tiny_patch16_224' });
  t.equal(byName.numHeads, 3, 'named arch gives 3 heads');
  t.equal(byName.arch, 'deit_tiny_patch16_224', 'named arch reported');

  const explicit = inferArchitecture(tiny, { numHeads: 3 });
  t.equal(explicit.arch, 'deit_tiny_patch16_224', 'numHeads matching a named arch reports its name');
  const other = inferArchitecture(tiny, { numHeads: 4 });
  t.equal(other.numHeads, 4, 'numHeads overrides the dims match');
  t.equal(other.arch, null, 'and no name is reported');

  bad(t, () => inferArchitecture(tiny, { arch: 'deit_small_patch16_224' }),
    /does not match arch deit_small_patch16_224: embed dim 192 \(expected 384\)/, 'named arch disagreeing with the tensors');
  const shallow = makeTensors({ C: 192, depth: 2, grid: 2 });
  bad(t, () => inferArchitecture(shallow, { arch: 'deit_tiny_patch16_224' }), /depth 2 \(expected 12\)/, 'named arch with wrong depth');
  badOpt(t, () => inferArchitecture(tiny, { arch: 'deit_tiny_patch16_224', numHeads: 6 }),
    /numHeads 6 contradicts arch deit_tiny_patch16_224, which has 3 heads/, 'numHeads contradicting arch');
  t.end();
});

test('option errors', (t) => {
  const m = makeTensors();
  badOpt(t, () => inferArchitecture(m, { arch: 'vit_huge' }),
    /unknown arch "vit_huge"; known archs: deit_tiny_patch16_224, deit_small_patch16_224, deit_base_patch16_224/, 'unknown arch name');
  badOpt(t, () => inferArchitecture(m, { arch: 'toString' }), /unknown arch "toString"/, 'prototype key is not an arch');
  badOpt(t, () => inferArchitecture(m, { numHeads: 5 }), /numHeads 5 does not divide embed dim 48/, 'heads not dividing embedDim');
  badOpt(t, () => inferArchitecture(m, { numHeads: 0 }), /numHeads must be a positive integer, got 0/, 'zero heads');
  badOpt(t, () => inferArchitecture(m, { numHeads: 1.5 }), /numHeads must be a positive integer, got 1\.5/, 'fractional heads');
  badOpt(t, () => inferArchitecture(m), /embed dim 48, depth 2, patch size 16: pass `arch` .* or `numHeads`/, 'no way to know the heads');
  t.end();
});

test('checkpoint errors', (t) => {
  let m = makeTensors();
  m.delete('blocks.1.attn.qkv.bias');
  bad(t, () => inferArchitecture(m, { numHeads: 4 }), /^missing tensor blocks\.1\.attn\.qkv\.bias$/, 'missing qkv bias');

  for (const name of ['cls_token', 'pos_embed', 'patch_embed.proj.weight', 'head.weight', 'head.bias', 'norm.bias', 'blocks.0.mlp.fc1.weight']) {
    m = makeTensors();
    m.delete(name);
    bad(t, () => inferArchitecture(m, { numHeads: 4 }), new RegExp(`^missing tensor ${name.replace(/\./g, '\\.')}$`), `missing ${name}`);
  }

  m = makeTensors();
  m.set('blocks.0.attn.proj.weight', tensor([48, 47]));
  bad(t, () => inferArchitecture(m, { numHeads: 4 }), /^tensor blocks\.0\.attn\.proj\.weight has shape \[48,47\], expected \[48,48\]$/, 'wrong shape');

  m = makeTensors();
  m.set('blocks.1.mlp.fc2.weight', tensor([48, 100]));
  bad(t, () => inferArchitecture(m, { numHeads: 4 }), /tensor blocks\.1\.mlp\.fc2\.weight has shape \[48,100\], expected \[48,192\]/, 'mlp hidden inconsistent across blocks');

  m = makeTensors();
  m.set('head.bias', tensor([11]));
  bad(t, () => inferArchitecture(m, { numHeads: 4 }), /tensor head\.bias has shape \[11\], expected \[10\]/, 'head bias size');

  m = makeTensors();
  m.set('cls_token', tensor([1, 48]));
  bad(t, () => inferArchitecture(m, { numHeads: 4 }), /tensor cls_token has shape \[1,48\], expected \[1,1,C\]/, 'cls_token rank');

  m = makeTensors();
  m.set('patch_embed.proj.weight', tensor([48, 3, 16, 8]));
  bad(t, () => inferArchitecture(m, { numHeads: 4 }), /patch_embed\.proj\.weight has shape \[48,3,16,8\], expected \[48,inChans,p,p\]/, 'non-square patch');

  m = makeTensors();
  m.set('pos_embed', tensor([1, 16, 48]));
  bad(t, () => inferArchitecture(m, { numHeads: 4 }), /pos_embed has shape \[1,16,48\]: 15 patch positions .* not a perfect square/, 'non-square pos_embed');

  m = makeTensors();
  m.set('pos_embed', tensor([1, 198, 48]));
  m.set('dist_token', tensor([1, 1, 48]));
  bad(t, () => inferArchitecture(m, { numHeads: 4 }), /197 patch positions .*dist_token/, 'distilled checkpoint explained');

  m = makeTensors();
  m.set('pos_embed', tensor([1, 197, 40]));
  bad(t, () => inferArchitecture(m, { numHeads: 4 }), /pos_embed has shape \[1,197,40\], expected \[1,1\+P,48\]/, 'pos_embed width');

  m = makeTensors({ depth: 4 });
  for (const k of [...m.keys()]) if (k.startsWith('blocks.2.')) m.delete(k);
  bad(t, () => inferArchitecture(m, { numHeads: 4 }), /missing block blocks\.2: blocks must be numbered 0\.\.3/, 'non-contiguous blocks');

  m = makeTensors({ depth: 2 });
  m.set('blocks.5.norm1.weight', tensor([48]));
  bad(t, () => inferArchitecture(m, { numHeads: 4 }), /missing block blocks\.2/, 'stray high block index');

  m = makeTensors({ depth: 0 });
  bad(t, () => inferArchitecture(m, { numHeads: 4 }), /no transformer blocks/, 'no blocks');

  m = makeTensors();
  m.set('norm.weight', { shape: [48], data: new Float32Array(47) });
  bad(t, () => inferArchitecture(m, { numHeads: 4 }), /tensor norm\.weight has 47 values, shape \[48\] needs 48/, 'data length disagrees with shape');
  t.end();
});

test('requiredTensors lists every tensor with its shape', (t) => {
  const req = requiredTensors({ embedDim: 8, depth: 2, patchSize: 4, inChans: 3, gridSize: [2, 2], numClasses: 5, mlpHidden: 16 });
  t.equal(req.size, 8 + 12 * 2, '8 global + 12 per block');
  t.deepEqual(req.get('pos_embed'), [1, 5, 8], 'pos_embed');
  t.deepEqual(req.get('blocks.1.attn.qkv.weight'), [24, 8], 'qkv');
  t.deepEqual(req.get('blocks.0.mlp.fc2.weight'), [8, 16], 'fc2');
  t.end();
});

test('tiny-evit fixture checkpoint', async (t) => {
  if (!fs.existsSync(FIXTURE)) {
    t.fail(`fixture missing: ${FIXTURE}`);
    return;
  }
  const { tensors, dtypes } = await readSafetensors(FIXTURE);
  t.ok([...dtypes.values()].every((d) => d === 'F32' || d === 'F16' || d === 'BF16'), 'dtypes');
  const a = inferArchitecture(tensors, { numHeads: 3 });
  t.equal(a.embedDim, 48, 'embed 48');
  t.equal(a.depth, 12, 'depth 12');
  t.equal(a.numHeads, 3, '3 heads');
  t.equal(a.patchSize, 16, 'patch 16');
  t.equal(a.inChans, 3, '3 input channels');
  t.deepEqual(a.gridSize, [14, 14], '14x14 grid');
  t.equal(a.numClasses, 10, '10 classes');
  t.equal(a.mlpHidden, tensors.get('blocks.0.mlp.fc1.weight').shape[0], 'mlp hidden');
  t.throws(() => inferArchitecture(tensors), OptionsError, 'no named arch has embed 48: heads must be given');
});
