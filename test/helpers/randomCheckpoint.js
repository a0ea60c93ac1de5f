'use strict';
// A DeiT-layout safetensors checkpoint of random weights and any size, for tests that need
// a model bigger than the committed fixtures.
const fs = require('node:fs');
const { mulberry32 } = require('./reference');

/** Writes it to `file`; dims: { embed, depth, mlp, classes, patch, grid, inChans }. */
function writeRandomCheckpoint(file, { embed: C, depth, mlp, classes, patch: p = 16, grid = 14, inChans = 3 }, seed = 7) {
  const { serializeSafetensors } = require('../../dist');
  const rand = mulberry32(seed);
  const t = new Map();
  const add = (name, shape, fill) => {
    const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
    for (let i = 0; i < data.length; i++) data[i] = fill === undefined ? 0.04 * (rand() - 0.5) : fill;
    t.set(name, { dtype: 'F32', shape, data });
  };
  add('cls_token', [1, 1, C]);
  add('pos_embed', [1, 1 + grid * grid, C]);
  add('patch_embed.proj.weight', [C, inChans, p, p]);
  add('patch_embed.proj.bias', [C]);
  for (let i = 0; i < depth; i++) {
    const b = `blocks.${i}`;
    for (const n of ['norm1', 'norm2']) {
      add(`${b}.${n}.weight`, [C], 1);
      add(`${b}.${n}.bias`, [C], 0);
    }
    add(`${b}.attn.qkv.weight`, [3 * C, C]);
    add(`${b}.attn.qkv.bias`, [3 * C]);
    add(`${b}.attn.proj.weight`, [C, C]);
    add(`${b}.attn.proj.bias`, [C]);
    add(`${b}.mlp.fc1.weight`, [mlp, C]);
    add(`${b}.mlp.fc1.bias`, [mlp]);
    add(`${b}.mlp.fc2.weight`, [C, mlp]);
    add(`${b}.mlp.fc2.bias`, [C]);
  }
  add('norm.weight', [C], 1);
  add('norm.bias', [C], 0);
  add('head.weight', [classes, C]);
  add('head.bias', [classes]);
  fs.writeFileSync(file, serializeSafetensors(t, { format: 'pt' }));
}

module.exports = { writeRandomCheckpoint };
