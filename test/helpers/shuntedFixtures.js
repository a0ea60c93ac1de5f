'use strict';
// The Shunted fixtures (test/fixtures/shunted, made by tools/reference/make_shunted_fixtures.py)
// as the native binding takes them: the checkpoint's tensors with each stem BatchNorm folded
// into its convolution (tools/reference/SHUNTED.md, "BatchNorm folding"), and the config
// object of `new binding.Model({ family: 'shunted', ... })`.
const path = require('node:path');
const { readCheckpoint } = require('../../dist/weights/checkpoint');
const { readNpy } = require('../../dist/npy');

const dir = path.join(__dirname, '..', 'fixtures', 'shunted');
const golden = require('../fixtures/shunted/golden.json');
const BN_EPS = 1e-5;

/** Path of a fixture file named in golden.json (relative to test/fixtures/shunted). */
const shuntedFixture = (name) => path.join(dir, name);

/**
 * conv (no bias) + eval BatchNorm as one conv: W' = W·a, b' = β − μ·a with a = γ/√(σ² + ε) per
 * output channel, in float64, each result rounded to float32 once.
 */
function foldBatchNorm(convW, shape, gamma, beta, mean, variance) {
  const cout = shape[0];
  const per = convW.length / cout;
  const w = new Float32Array(convW.length);
  const b = new Float32Array(cout);
  for (let o = 0; o < cout; o++) {
    const a = gamma[o] / Math.sqrt(variance[o] + BN_EPS);
    for (let i = 0; i < per; i++) w[o * per + i] = convW[o * per + i] * a;
    b[o] = beta[o] - mean[o] * a;
  }
  return { w, b };
}

/** The checkpoint's tensors by name, stem BatchNorms folded and removed. */
function foldedTensors(tensors, numConv) {
  const out = {};
  for (const [name, t] of tensors) if (!/^patch_embed1\.conv\.\d+\.(?:running_|weight|bias)/.test(name)) out[name] = t.data;
  for (let j = 0; j <= numConv; j++) {
    const conv = j === 0 ? 0 : 3 * j;
    const bn = `patch_embed1.conv.${conv + 1}.`;
    const cw = tensors.get(`patch_embed1.conv.${conv}.weight`);
    const f = foldBatchNorm(cw.data, cw.shape, ...['weight', 'bias', 'running_mean', 'running_var'].map((k) => tensors.get(bn + k).data));
    out[`patch_embed1.conv.${conv}.weight`] = f.w;
    out[`patch_embed1.conv.${conv}.bias`] = f.b;
  }
  const last = 3 + 3 * numConv;
  for (const k of ['weight', 'bias']) out[`patch_embed1.conv.${last}.${k}`] = tensors.get(`patch_embed1.conv.${last}.${k}`).data;
  return out;
}

/** The binding's config for a golden.json model at imgH × imgW. */
function shuntedConfig(arch, imgH, imgW = imgH) {
  return {
    family: 'shunted',
    stages: arch.embedDims.map((dim, s) => ({
      dim,
      depth: arch.depths[s],
      heads: arch.numHeads[s],
      srRatio: arch.srRatios[s],
      mlpHidden: arch.mlpHidden[s],
    })),
    numConv: arch.numConv,
    inChans: arch.inChans,
    imgH,
    imgW,
    numClasses: arch.numClasses,
  };
}

/** { tensors, format } of one checkpoint file of a golden.json model. */
async function loadShuntedFixture(model, file) {
  const ckpt = await readCheckpoint(shuntedFixture(file));
  return { tensors: foldedTensors(ckpt.tensors, model.arch.numConv), format: ckpt.format };
}

/** A golden input (its path in golden.json is relative to test/fixtures/shunted). */
const readShuntedInput = (name) => readNpy(path.join(dir, golden.inputs[name].file));

module.exports = { golden, shuntedFixture, foldBatchNorm, foldedTensors, shuntedConfig, loadShuntedFixture, readShuntedInput };
