'use strict';
const test = require('tape');
const path = require('node:path');
const fs = require('node:fs');
const crypto = require('node:crypto');
const {
  isShuntedCheckpoint, inferShuntedArchitecture, requiredShuntedTensors, validShuntedInputSize, shuntedStageGrids,
  SHUNTED_ARCHS,
} = require('../dist/weights/shunted');
const { readCheckpoint } = require('../dist/weights/checkpoint');
const { WeightsError, OptionsError } = require('../dist/errors');

const DIR = path.join(__dirname, 'fixtures', 'shunted');
const GOLDEN = JSON.parse(fs.readFileSync(path.join(DIR, 'golden.json'), 'utf8'));

/** Zero-filled views of one buffer (the largest tensor is patch_embed4.proj, 512·256·3·3): full-size models cost 4.7 MB. */
const SHARED = new ArrayBuffer(4 * 512 * 256 * 9);
function tensor(shape) {
  return { shape, data: new Float32Array(SHARED, 0, shape.reduce((a, b) => a * b, 1)) };
}

/** A synthetic checkpoint with every tensor a model of these dimensions reads. */
function makeTensors(dims) {
  const m = new Map();
  for (const [name, shape] of requiredShuntedTensors(dims)) m.set(name, tensor(shape));
  return m;
}

function namedDims(name, numClasses = 1000) {
  const a = SHUNTED_ARCHS[name];
  return {
    embedDims: [...a.embedDims], depths: [...a.depths], srRatios: [...a.srRatios], numConv: a.numConv,
    mlpHidden: a.embedDims.map((c, i) => Math.trunc(c * a.mlpRatios[i])), stemWidth: 64, inChans: 3, numClasses,
  };
}

/** A small model: num_conv 1, sr 8/4/2/1, widths 64/16/32/16. */
const SMALL = {
  embedDims: [64, 16, 32, 16], depths: [2, 1, 2, 1], srRatios: [8, 4, 2, 1], numConv: 1,
  mlpHidden: [64, 32, 96, 48], stemWidth: 64, inChans: 3, numClasses: 7,
};
const SMALL_HEADS = [2, 4, 4, 1];

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

test('fixtures: every file is recognised and its architecture inferred as recorded', async (t) => {
  for (const model of GOLDEN.models) {
    const a = model.arch;
    for (const [kind, file] of Object.entries(model.files)) {
      const ck = await readCheckpoint(path.join(DIR, file));
      const label = `${model.name} ${kind}`;
      t.equal(ck.format, kind === 'safetensors' ? 'safetensors' : 'pth', `${label}: format`);
      if (kind !== 'safetensors') {
        t.equal(ck.stateDictKey, kind === 'pth-model' ? 'model' : null, `${label}: state dict key`);
        t.equal(ck.skipped.size, model.numBatchNormCounters, `${label}: the int64 BatchNorm counters are skipped`);
      }
      t.equal(ck.tensors.size, model.numTensors, `${label}: ${model.numTensors} float tensors`);
      t.ok(isShuntedCheckpoint(ck.tensors.keys()), `${label}: detected as Shunted`);
      const arch = inferShuntedArchitecture(ck.tensors, { numHeads: a.numHeads });
      t.deepEqual(arch, {
        family: 'shunted', embedDims: a.embedDims, depths: a.depths, numHeads: a.numHeads, headDims: a.headDims,
        mlpHidden: a.mlpHidden, mlpRatios: a.mlpRatios, srRatios: a.srRatios, numConv: a.numConv,
        stemWidth: a.stemWidth, inChans: a.inChans, numClasses: a.numClasses, arch: null,
      }, `${label}: architecture`);
      t.equal(requiredShuntedTensors(arch).size, model.numTensors, `${label}: the model reads every float tensor of the file`);
      badOpt(t, () => inferShuntedArchitecture(ck.tensors), /cannot infer the attention heads .*pass `arch` .* or `numHeads`/,
        `${label}: no heads without an option`);
      bad(t, () => inferShuntedArchitecture(ck.tensors, { arch: 'shunted_t' }),
        new RegExp(`does not match arch shunted_t: embed dims ${a.embedDims.join('/')} \\(expected 64/128/256/512\\)`),
        `${label}: not shunted_t`);
      for (const c of model.cases) {
        const v = validShuntedInputSize(arch, c.imgSize);
        t.ok(v.ok, `${label}: ${c.imgSize} px is valid`);
        t.deepEqual(v.grids, c.stages.map((s) => s.grid), `${label}: ${c.imgSize} px stage grids`);
      }
    }
  }
});

test('fixtures: the .pth and safetensors of shunted-c2 hold the same tensors; inputs are the recorded ones', async (t) => {
  const model = GOLDEN.models.find((m) => m.files.safetensors && m.files['pth-bare']);
  const st = await readCheckpoint(path.join(DIR, model.files.safetensors));
  const pth = await readCheckpoint(path.join(DIR, model.files['pth-bare']));
  t.deepEqual([...pth.tensors.keys()], [...st.tensors.keys()], 'same names, same order');
  let same = true;
  for (const [name, a] of st.tensors) {
    const b = pth.tensors.get(name);
    if (a.shape.join() !== b.shape.join() || Buffer.compare(Buffer.from(a.data.buffer, a.data.byteOffset, a.data.byteLength),
      Buffer.from(b.data.buffer, b.data.byteOffset, b.data.byteLength)) !== 0) same = false;
  }
  t.ok(same, 'bit-identical tensors');
  for (const [name, inp] of Object.entries(GOLDEN.inputs)) {
    const hash = crypto.createHash('sha256').update(fs.readFileSync(path.join(DIR, inp.file))).digest('hex');
    t.equal(hash, inp.sha256, `${name}: the goldens were computed on this file`);
  }
});

test('family detection from tensor names', async (t) => {
  const deit = await readCheckpoint(path.join(__dirname, 'fixtures', 'tiny-evit.safetensors'));
  t.notOk(isShuntedCheckpoint(deit.tensors.keys()), 'a DeiT checkpoint is not Shunted');
  const pth = await readCheckpoint(path.join(__dirname, 'fixtures', 'pth', 'deit-mini.pth'));
  t.notOk(isShuntedCheckpoint(pth.tensors.keys()), 'a DeiT .pth is not Shunted');
  const pvt = ['patch_embed1.proj.weight', 'block1.0.attn.q.weight', 'block1.0.attn.kv.weight', 'block1.0.attn.sr.weight',
    'block1.0.mlp.dwconv.dwconv.weight', 'norm1.weight', 'head.weight'];
  t.notOk(isShuntedCheckpoint(pvt), 'PVT names (patch_embed1.proj, attn.sr, attn.kv) are not Shunted');
  t.ok(isShuntedCheckpoint(['patch_embed1.conv.0.weight']), 'the convolutional stem alone');
  t.ok(isShuntedCheckpoint(['block3.2.attn.kv2.weight']), 'shunted attention alone (a checkpoint missing its stem still gets Shunted errors)');
  t.ok(isShuntedCheckpoint(['block4.0.attn.local_conv.bias']), 'the sr = 1 local conv');
  t.notOk(isShuntedCheckpoint([]), 'no names');
  t.end();
});

test('the released variants: heads from the arch name or from the tensors', (t) => {
  for (const name of Object.keys(SHUNTED_ARCHS)) {
    const m = makeTensors(namedDims(name));
    t.ok(isShuntedCheckpoint(m.keys()), `${name}: detected`);
    const a = inferShuntedArchitecture(m);
    t.equal(a.arch, name, `${name}: matched from the tensors alone`);
    t.deepEqual(a.numHeads, [2, 4, 8, 16], `${name}: heads 2/4/8/16`);
    t.deepEqual(a.headDims, [32, 32, 32, 32], `${name}: head dim 32 everywhere`);
    t.deepEqual(a.mlpRatios, [8, 8, 4, 4], `${name}: MLP ratios`);
    t.deepEqual(a.srRatios, [8, 4, 2, 1], `${name}: sr ratios`);
    t.equal(a.numConv, SHUNTED_ARCHS[name].numConv, `${name}: num_conv`);
    t.deepEqual(a.depths, SHUNTED_ARCHS[name].depths, `${name}: depths`);
    t.equal(a.numClasses, 1000, `${name}: classes`);
    t.deepEqual(inferShuntedArchitecture(m, { arch: name }), a, `${name}: same with arch given`);
    t.deepEqual(inferShuntedArchitecture(m, { numHeads: [2, 4, 8, 16] }), a, `${name}: numHeads matching the variant reports its name`);
    const other = inferShuntedArchitecture(m, { numHeads: [4, 8, 16, 32] });
    t.deepEqual([other.numHeads, other.headDims, other.arch], [[4, 8, 16, 32], [16, 16, 16, 16], null], `${name}: other heads, no name`);
  }
  const t100 = makeTensors(namedDims('shunted_t', 100));
  t.equal(inferShuntedArchitecture(t100).arch, 'shunted_t', 'a fine-tuned head (100 classes) still matches');

  bad(t, () => inferShuntedArchitecture(makeTensors(namedDims('shunted_t')), { arch: 'shunted_s' }),
    /does not match arch shunted_s: depths 1\/2\/4\/1 \(expected 2\/4\/12\/1\), num_conv 0 \(expected 1\)$/, 'shunted_t tensors named shunted_s');
  badOpt(t, () => inferShuntedArchitecture(makeTensors(namedDims('shunted_b')), { arch: 'shunted_b', numHeads: [2, 4, 8, 8] }),
    /numHeads 2\/4\/8\/8 contradicts arch shunted_b, which has 2\/4\/8\/16 heads/, 'numHeads contradicting the arch');
  t.end();
});

test('a small model: every dimension from the tensors, heads from numHeads', (t) => {
  const m = makeTensors(SMALL);
  m.set('patch_embed1.conv.1.num_batches_tracked', tensor([]));
  m.set('optimizer.extra', tensor([3]));
  const a = inferShuntedArchitecture(m, { numHeads: SMALL_HEADS });
  t.deepEqual(a, {
    family: 'shunted', embedDims: [64, 16, 32, 16], depths: [2, 1, 2, 1], numHeads: [2, 4, 4, 1], headDims: [32, 4, 8, 16],
    mlpHidden: [64, 32, 96, 48], mlpRatios: [1, 2, 3, 3], srRatios: [8, 4, 2, 1], numConv: 1, stemWidth: 64, inChans: 3,
    numClasses: 7, arch: null,
  }, 'architecture (one head in the sr = 1 stage is fine; BatchNorm counters and unknown keys are ignored)');
  t.end();
});

test('option errors', (t) => {
  const m = makeTensors(SMALL);
  badOpt(t, () => inferShuntedArchitecture(m, { arch: 'shunted_l' }), /unknown arch "shunted_l"; known Shunted archs: shunted_t, shunted_s, shunted_b/, 'unknown arch');
  badOpt(t, () => inferShuntedArchitecture(m, { arch: 'hasOwnProperty' }), /unknown arch "hasOwnProperty"/, 'prototype key is not an arch');
  badOpt(t, () => inferShuntedArchitecture(m, { arch: 'deit_small_patch16_224' }), /unknown arch "deit_small_patch16_224"/, 'a DeiT arch');
  for (const [h, label] of [[[2, 4, 8], 'three counts'], [[2, 4, 8, 16, 32], 'five counts'], [[2, 4, 0, 1], 'a zero'],
    [[2, 4, 2.5, 1], 'a fraction'], [4, 'a number'], ['2,4,8,16', 'a string']]) {
    badOpt(t, () => inferShuntedArchitecture(m, { numHeads: h }), /numHeads must be 4 positive integers, one per stage/, `numHeads: ${label}`);
  }
  badOpt(t, () => inferShuntedArchitecture(m, { numHeads: [2, 4, 5, 1] }), /numHeads 5 for stage 3 does not divide its embed dim 32/, 'heads not dividing a width');
  badOpt(t, () => inferShuntedArchitecture(m, { numHeads: [2, 4, 4, 3] }), /numHeads 3 for stage 4 does not divide its embed dim 16/, 'heads not dividing the last width');
  badOpt(t, () => inferShuntedArchitecture(m, { numHeads: [1, 4, 4, 1] }), /numHeads 1 for stage 1 is odd, but its sr ratio 8 splits the heads into two equal groups/, 'odd heads where sr > 1');
  badOpt(t, () => inferShuntedArchitecture(m), /cannot infer the attention heads of a Shunted Transformer with embed dims 64\/16\/32\/16, depths 2\/1\/2\/1, num_conv 1/, 'no heads');
  t.end();
});

/** Runs fn on a fresh copy of SMALL's tensors after edit, expecting a WeightsError matching re. */
function broken(t, edit, re, label, dims = SMALL) {
  const m = makeTensors(dims);
  edit(m);
  bad(t, () => inferShuntedArchitecture(m, { numHeads: SMALL_HEADS }), re, label);
}

test('checkpoint errors: missing and misshapen tensors', (t) => {
  const required = [...requiredShuntedTensors(SMALL).keys()];
  // stem 14 (num_conv 1), 30 per sr > 1 block, 18 per sr = 1 block, 4 per patch embedding, 2 per stage norm, head 2
  t.equal(required.length, 14 + 5 * 30 + 1 * 18 + 3 * 4 + 4 * 2 + 2, 'tensor count of the small model');
  for (const name of ['patch_embed1.conv.0.weight', 'patch_embed1.conv.1.running_var', 'patch_embed1.conv.3.weight', 'patch_embed1.conv.4.bias',
    'patch_embed1.conv.6.bias', 'patch_embed1.norm.weight', 'patch_embed2.proj.bias', 'patch_embed3.norm.weight', 'block1.1.attn.kv1.bias',
    'block1.0.attn.norm2.weight', 'block2.0.attn.local_conv2.weight', 'block3.1.attn.sr2.bias', 'block4.0.attn.local_conv.weight',
    'block4.0.attn.kv.bias', 'block3.0.mlp.dwconv.dwconv.bias', 'block1.0.mlp.fc1.weight', 'norm4.bias', 'head.weight', 'head.bias']) {
    broken(t, (m) => m.delete(name), new RegExp(`^missing tensor ${name.replace(/\./g, '\\.')}`), `missing ${name}`);
  }
  broken(t, (m) => m.set('block1.0.attn.kv1.weight', tensor([64, 32])),
    /^tensor block1\.0\.attn\.kv1\.weight has shape \[64,32\], expected \[64,64\]$/, 'kv1 of the wrong shape');
  broken(t, (m) => m.set('block4.0.attn.kv.weight', tensor([16, 16])),
    /^tensor block4\.0\.attn\.kv\.weight has shape \[16,16\], expected \[32,16\]$/, 'kv not 2C wide');
  broken(t, (m) => m.set('block2.0.attn.local_conv1.weight', tensor([16, 1, 3, 3])),
    /^tensor block2\.0\.attn\.local_conv1\.weight has shape \[16,1,3,3\], expected \[8,1,3,3\]$/, 'local conv over all channels instead of half');
  broken(t, (m) => m.set('block1.0.attn.sr2.weight', tensor([64, 64, 2, 2])),
    /^tensor block1\.0\.attn\.sr2\.weight has shape \[64,64,2,2\], expected \[64,64,4,4\]$/, 'sr2 not half of sr1');
  broken(t, (m) => m.set('patch_embed3.proj.weight', tensor([32, 16, 2, 2])),
    /^tensor patch_embed3\.proj\.weight has shape \[32,16,2,2\], expected \[32,16,3,3\]$/, 'patch embedding kernel');
  broken(t, (m) => m.set('head.weight', tensor([7, 32])), /^tensor head\.weight has shape \[7,32\], expected \[7,16\]$/, 'head on the wrong width');
  broken(t, (m) => m.set('head.weight', tensor([7])), /^tensor head\.weight has shape \[7\], expected \[numClasses,16\]$/, 'head of rank 1');
  broken(t, (m) => m.set('patch_embed1.conv.0.weight', tensor([64, 3, 3, 3])), /^tensor patch_embed1\.conv\.0\.weight has shape \[64,3,3,3\], expected \[width,inChans,7,7\]$/, 'stem kernel');
  broken(t, (m) => m.set('patch_embed1.conv.6.weight', tensor([64, 64, 3, 3])), /^tensor patch_embed1\.conv\.6\.weight has shape \[64,64,3,3\], expected \[C1,64,2,2\]$/, 'stem last conv kernel');
  broken(t, (m) => m.set('patch_embed1.conv.6.weight', tensor([32, 64, 2, 2])), /^tensor patch_embed1\.conv\.6\.weight has shape \[32,64,2,2\], expected \[64,64,2,2\]$/, 'stem output width not the stage width');
  broken(t, (m) => m.set('patch_embed2.norm.weight', tensor([16, 1])), /^tensor patch_embed2\.norm\.weight has shape \[16,1\], expected \[C2\]$/, 'norm of rank 2');
  broken(t, (m) => m.set('block3.0.mlp.fc1.weight', tensor([96])), /^tensor block3\.0\.mlp\.fc1\.weight has shape \[96\], expected \[hidden,32\]$/, 'fc1 of rank 1');
  broken(t, (m) => { m.get('norm2.weight').data = new Float32Array(3); },
    /^tensor norm2\.weight has 3 values, shape \[16\] needs 16$/, 'data shorter than the shape');
  t.end();
});

test('checkpoint errors: layouts SSA.py cannot build', (t) => {
  broken(t, (m) => m.set('block1.0.attn.sr1.weight', tensor([64, 64, 3, 3])),
    /^tensor block1\.0\.attn\.sr1\.weight has shape \[64,64,3,3\], expected \[64,64,r,r\] with r in 2, 4, 8$/, 'sr ratio 3');
  broken(t, (m) => m.set('block1.0.attn.sr1.weight', tensor([64, 64, 16, 16])), /with r in 2, 4, 8$/, 'sr ratio 16');
  broken(t, (m) => m.set('block1.0.attn.kv.weight', tensor([128, 64])),
    /^block 1\.0 has both block1\.0\.attn\.sr1 \(sr > 1\) and block1\.0\.attn\.kv \(sr = 1\)$/, 'both attentions');
  broken(t, (m) => { m.delete('block4.0.attn.kv.weight'); },
    /^missing tensor block4\.0\.attn\.sr1\.weight or block4\.0\.attn\.kv\.weight/, 'neither attention');
  broken(t, (m) => {
    for (const k of [...m.keys()]) if (k.startsWith('block1.1.attn.')) m.delete(k);
    m.set('block1.1.attn.q.weight', tensor([64, 64]));
    m.set('block1.1.attn.kv.weight', tensor([128, 64]));
  }, /^block 1\.1 has sr ratio 1 but block 1\.0 has 8: SSA\.py uses one sr ratio per stage$/, 'two sr ratios in one stage');
  broken(t, (m) => m.set('block3.1.mlp.fc1.weight', tensor([64, 32])),
    /^block 3\.1 has MLP width 64 but block 3\.0 has 96: SSA\.py uses one MLP ratio per stage$/, 'two MLP ratios in one stage');
  broken(t, (m) => { for (const k of [...m.keys()]) if (k.startsWith('block3.')) m.delete(k); },
    /^stage 3 has no blocks \(no tensors named block3\.N\.\*\)$/, 'a stage without blocks');
  broken(t, (m) => { for (const k of [...m.keys()]) if (k.startsWith('block1.0.')) m.delete(k); },
    /^missing block block1\.0: stage 1's blocks must be numbered 0\.\.1 without gaps$/, 'a gap in the block numbers');
  broken(t, (m) => m.set('block5.0.attn.q.weight', tensor([8, 8])), /^unexpected tensor block5\.0\.attn\.q\.weight: a Shunted Transformer has stages block1\.\.block4$/, 'a fifth stage');
  broken(t, (m) => { m.set('block2.0.attn.sr1.weight', tensor([15, 15, 4, 4])); m.set('patch_embed2.norm.weight', tensor([15])); },
    /^stage 2 has width 15 and sr ratio 4: the two head groups need an even width$/, 'odd width where the heads split');
  t.end();
});

test('checkpoint errors: the stem', (t) => {
  broken(t, (m) => m.set('patch_embed1.conv.0.bias', tensor([64])),
    /^unexpected tensor patch_embed1\.conv\.0\.bias: SSA\.py's stem with num_conv 1 has no such parameter$/, 'a bias on a conv that has none');
  broken(t, (m) => m.set('patch_embed1.conv.2.weight', tensor([64])), /^unexpected tensor patch_embed1\.conv\.2\.weight/, 'parameters at a ReLU index');
  broken(t, (m) => { for (const k of [...m.keys()]) if (k.startsWith('patch_embed1.conv.6.')) m.delete(k); },
    /^the stem's last tensors are at patch_embed1\.conv\.4, but SSA\.py's stem ends with its 2x2 conv at index 3 \+ 3·num_conv/, 'no final conv');
  broken(t, (m) => { for (const k of [...m.keys()]) if (k.startsWith('patch_embed1.conv.3.')) m.delete(k); },
    /^missing tensor patch_embed1\.conv\.3\.weight$/, 'a BatchNorm without its conv');
  broken(t, (m) => { m.get('patch_embed1.conv.4.running_var').data = new Float32Array(64).fill(1).fill(-0.5, 10, 11); },
    /^tensor patch_embed1\.conv\.4\.running_var has -0\.5 at channel 10: a BatchNorm variance must be a number >= 0$/, 'a negative variance');
  broken(t, (m) => { m.get('patch_embed1.conv.1.running_var').data = new Float32Array(64).fill(NaN); },
    /^tensor patch_embed1\.conv\.1\.running_var has NaN at channel 0/, 'a NaN variance');
  // num_conv 0 and 2: the stem's index layout decides.
  for (const numConv of [0, 2, 3]) {
    const m = makeTensors({ ...SMALL, numConv });
    t.equal(inferShuntedArchitecture(m, { numHeads: SMALL_HEADS }).numConv, numConv, `num_conv ${numConv} from the stem's indices`);
  }
  t.end();
});

test('stage grids and valid input sizes', (t) => {
  const released = { srRatios: [8, 4, 2, 1] };
  t.deepEqual(shuntedStageGrids(224), [[56, 56], [28, 28], [14, 14], [7, 7]], '224 px');
  t.deepEqual(shuntedStageGrids(256), [[64, 64], [32, 32], [16, 16], [8, 8]], '256 px');
  t.deepEqual(shuntedStageGrids(97), [[24, 24], [12, 12], [6, 6], [3, 3]], '97 px (odd sizes round as the convolutions do)');
  t.deepEqual(shuntedStageGrids(240), [[60, 60], [30, 30], [15, 15], [8, 8]], '240 px');
  t.deepEqual(shuntedStageGrids([224, 256]), [[56, 64], [28, 32], [14, 16], [7, 8]], '224x256 px');

  for (const s of [224, 256, 64, 32, 31, 223, 225, 226, 384, [224, 256], [32, 288]]) {
    const v = validShuntedInputSize(released, s);
    t.ok(v.ok, `${s} is valid for sr 8/4/2/1`);
    t.notOk('reason' in v, `${s}: no reason`);
  }
  const v227 = validShuntedInputSize(released, 227);
  t.notOk(v227.ok, '227 is not valid');
  t.deepEqual(v227.grids[0], [57, 57], '227: stage-1 grid 57');
  t.equal(v227.reason, 'input 227 px gives stage 1 a 57x57 token grid, which its sr ratio 8 does not divide ' +
    "(every stage's grid must be a multiple of its sr ratio, 8/4/2/1); nearest sizes that work, height: 226 or 255; width: 226 or 255", '227: reason');
  t.match(validShuntedInputSize(released, 240).reason, /input 240 px gives stage 1 a 60x60 token grid, which its sr ratio 8 does not divide .* 226 or 255/, '240');
  t.match(validShuntedInputSize(released, [224, 240]).reason, /input 224x240 px gives stage 1 a 56x60 token grid, .*; nearest sizes that work, width: 226 or 255$/, '224x240 names the width only');
  t.match(validShuntedInputSize(released, 30).reason, /input 30 px gives stage 1 a 7x7 token grid.*height: 31; width: 31$/, '30: too small, 31 the only size near');
  t.match(validShuntedInputSize(released, 2).reason, /input 2 px gives stage 1 a 0x0 token grid/, '2 px: empty grid');
  t.match(validShuntedInputSize({ srRatios: [2, 2, 2, 2] }, 224).reason, /stage 4 a 7x7 token grid, which its sr ratio 2 does not divide/, 'a later stage fails');
  t.ok(validShuntedInputSize({ srRatios: [1, 1, 1, 1] }, 97).ok, 'sr 1 everywhere takes any size');
  t.ok(validShuntedInputSize({ srRatios: [1, 1, 1, 1] }, 3).ok, '... down to 3 px');
  for (const s of [0, -224, 224.5, NaN, Infinity, '224', [224], [224, 0], null]) {
    const v = validShuntedInputSize(released, s);
    t.deepEqual([v.ok, v.grids], [false, []], `${String(s)} is not a size`);
    t.match(v.reason, /image size must be a positive integer or \[height, width\] of positive integers/, `${String(s)}: reason`);
  }
  t.end();
});
