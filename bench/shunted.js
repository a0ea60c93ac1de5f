#!/usr/bin/env node
'use strict';
/**
 * Shunted Transformer against DeiT-S on the CPU backend, in one run (issue 16).
 *
 *   npm run bench:shunted            (needs `npm run build` first)
 *   node bench/shunted.js --quick    (a few runs, for smoke tests; writes bench/results/shunted-quick.*)
 *
 * Writes Shunted-T and Shunted-S checkpoints with seeded random weights (the released shapes and
 * tensor names, stem BatchNorms included) and DeiT-S with the same kind of weights, loads them with
 * loadModel (which folds the BatchNorms), then times,
 * round-robin per batch size (1 and 8) so machine noise hits them alike: Shunted-T, Shunted-S,
 * DeiT-S dense and DeiT-S at keep 0.7 (fused, blocks 3/6/9), all at 224 px. Reports img/s,
 * GFLOP/s (2 per multiply-accumulate, counted as tools/reference/shunted_reference.py's
 * count_macs does) and the ratio to DeiT-S dense of the same run; then where a Shunted-T pass
 * goes, from profiled runs of their own. Nothing asserts on time. Writes the `shunted` section
 * of docs/BENCHMARKS.md and bench/results/shunted.json.
 *
 * Environment: EVIT_BENCH_SCALE (default 1) scales the timing budgets.
 */
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const evit = require('../dist');
const { requiredShuntedTensors, SHUNTED_ARCHS } = require('../dist/weights/shunted');
const { writeSection } = require('./report');
const { mulberry32, normalFill, median, fmt, table, writeRandomCheckpoint, randomImages, timeRoundRobin, machineInfo, machineRows } = require('./common');

const QUICK = process.argv.includes('--quick');
const SCALE = Number(process.env.EVIT_BENCH_SCALE) > 0 ? Number(process.env.EVIT_BENCH_SCALE) : 1;
const IMG = 224;
const BATCHES = [1, 8];
const BUDGET = QUICK
  ? { 1: { seconds: 0.5, minRounds: 3, maxRounds: 5 }, 8: { seconds: 1, minRounds: 2, maxRounds: 3 } }
  : { 1: { seconds: 6 * SCALE, minRounds: 9, maxRounds: 300 }, 8: { seconds: 10 * SCALE, minRounds: 5, maxRounds: 80 } };
const PROFILE_RUNS = QUICK ? 2 : 9;
const DEIT_S = { embed: 384, depth: 12, heads: 6, patch: 16, mlp: 1536, classes: 1000, inChans: 3 };

const log = (msg) => process.stderr.write(`[bench] ${msg}\n`);

// ---------------------------------------------------------------- models

/** Stage dimensions of a released variant, with MLP widths. */
function shuntedDims(name) {
  const a = SHUNTED_ARCHS[name];
  return {
    ...a,
    mlpHidden: a.embedDims.map((c, i) => Math.trunc(c * a.mlpRatios[i])),
    stemWidth: 64,
    inChans: 3,
    numClasses: 1000,
  };
}

/**
 * A checkpoint of seeded random weights by the authors' names: normal (std 0.02), LayerNorm and
 * BatchNorm weights 1, BatchNorm running variance 1 and the other BatchNorm statistics 0.
 */
function writeShuntedCheckpoint(file, dims, seed) {
  const rand = mulberry32(seed);
  const tensors = new Map();
  for (const [name, shape] of requiredShuntedTensors(dims)) {
    const n = shape.reduce((x, y) => x * y, 1);
    const bn = /^patch_embed1\.conv\.(\d+)\./.exec(name) && Number(/conv\.(\d+)\./.exec(name)[1]) % 3 === 1;
    let data;
    if (/norm\d?\.weight$/.test(name) || (bn && /\.(weight|running_var)$/.test(name))) data = new Float32Array(n).fill(1);
    else if (bn) data = new Float32Array(n);
    else data = normalFill(rand, n, 0.02);
    tensors.set(name, { dtype: 'F32', shape, data });
  }
  fs.writeFileSync(file, evit.serializeSafetensors(tensors, { format: 'pt', note: 'random Shunted weights for benchmarking' }));
}

/** Multiply-accumulates of one image (count_macs of tools/reference/shunted_reference.py). */
function shuntedMacs(d, height = IMG, width = IMG) {
  let h = Math.floor((height + 6 - 7) / 2) + 1;
  let w = Math.floor((width + 6 - 7) / 2) + 1;
  let macs = d.stemWidth * d.inChans * 49 * h * w + d.numConv * d.stemWidth * d.stemWidth * 9 * h * w;
  h = Math.floor(h / 2);
  w = Math.floor(w / 2);
  macs += d.embedDims[0] * d.stemWidth * 4 * h * w;
  for (let s = 0; s < 4; s++) {
    if (s > 0) {
      h = Math.floor((h - 1) / 2) + 1;
      w = Math.floor((w - 1) / 2) + 1;
    }
    const C = d.embedDims[s];
    const r = d.srRatios[s];
    const F = d.mlpHidden[s];
    const N = h * w;
    if (s > 0) macs += C * d.embedDims[s - 1] * 9 * N;
    let block = 2 * N * C * C; // q, proj
    if (r === 1) {
      block += 2 * N * C * C + N * C * 9 + 2 * N * N * C;
    } else {
      for (const rho of [r, r / 2]) {
        const M = Math.floor(h / rho) * Math.floor(w / rho);
        block += M * C * C * rho * rho + M * C * C + M * (C / 2) * 9 + 2 * N * M * (C / 2);
      }
    }
    block += 2 * N * C * F + N * F * 9;
    macs += d.depths[s] * block;
  }
  return macs + d.embedDims[3] * d.numClasses;
}

/** FLOPs (2 per MAC) of one DeiT-S image through a schedule's token counts, as bench/forward.js counts them. */
function deitFlops(tokenCounts) {
  const { embed: C, depth, patch: p, mlp, classes, inChans } = DEIT_S;
  const P = (IMG / p) ** 2;
  let flops = 2 * P * C * inChans * p * p + 2 * C * classes;
  let n = P;
  for (let i = 0; i < depth; i++) {
    const N = 1 + n;
    flops += 2 * N * C * 3 * C + 4 * N * N * C + 2 * N * C * C + 4 * (1 + tokenCounts[i]) * C * mlp;
    n = tokenCounts[i];
  }
  return flops;
}

// ---------------------------------------------------------------- run

async function main() {
  const info = evit.backendInfo();
  const machine = machineInfo(info);
  log(`${machine.cpu}, ${machine.threads} threads, ${machine.simd}`);

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'evit-bench-shunted-'));
  const entries = [];
  for (const name of ['shunted_t', 'shunted_s']) {
    const dims = shuntedDims(name);
    const file = path.join(dir, `${name}.safetensors`);
    writeShuntedCheckpoint(file, dims, 1234);
    const model = await evit.loadModel(file, { arch: name, device: 'cpu' });
    entries.push({
      name: name === 'shunted_t' ? 'Shunted-T' : 'Shunted-S',
      flops: 2 * shuntedMacs(dims),
      forward: (img, B, profile) => model.forward(img, { profile }),
      dispose: () => model.dispose(),
    });
  }
  const ckpt = path.join(dir, 'deit-s.safetensors');
  const grid = IMG / DEIT_S.patch;
  writeRandomCheckpoint(ckpt, { embed: DEIT_S.embed, depth: DEIT_S.depth, patch: DEIT_S.patch, inChans: 3, gridH: grid, gridW: grid, mlp: DEIT_S.mlp, classes: DEIT_S.classes }, 1234, 'random DeiT-S weights for benchmarking');
  for (const [label, options] of [['DeiT-S dense', { keepRate: 1 }], ['DeiT-S keep 0.7 fused', { keepRate: 0.7, fuse: true, dropLoc: [3, 6, 9] }]]) {
    const model = await evit.loadModel(ckpt, { arch: 'deit_small_patch16_224', device: 'cpu', ...options });
    const counts = (await model.forward(randomImages(1, 3, IMG, IMG))).schedule.tokenCounts;
    entries.push({ name: label, flops: deitFlops(counts), forward: (img) => model.forward(img), dispose: () => model.dispose() });
  }
  fs.rmSync(dir, { recursive: true, force: true });

  const results = [];
  for (const B of BATCHES) {
    const img = randomImages(B, 3, IMG, IMG, 7);
    const timed = entries.map((e) => ({ run: () => e.forward(img, B, false), settleMs: 20 }));
    const rounds = await timeRoundRobin(timed, BUDGET[B], (r, n) => log(`batch ${B}: round ${r}/${n}`));
    const dense = median(timed[2].times);
    entries.forEach((e, i) => {
      const ms = median(timed[i].times);
      results.push({ model: e.name, batch: B, gflopPerImage: e.flops / 1e9, runs: rounds, medianMs: ms, imgPerSec: (1000 * B) / ms, gflops: (e.flops * B) / ms / 1e6, vsDeitDense: dense / ms });
    });
  }

  // Where a Shunted-T pass goes: per-op times of profiled runs (a clock read per op), per image.
  const slots = info.profileSlots.shunted;
  const profile = {};
  for (const B of BATCHES) {
    const img = randomImages(B, 3, IMG, IMG, 7);
    const runs = new Map();
    for (let r = 0; r < PROFILE_RUNS; r++) {
      const { profile: p } = await entries[0].forward(img, B, true);
      for (const s of slots.model) runs.set(s, [...(runs.get(s) || []), p[s]]);
      for (const s of slots.block) runs.set(s, [...(runs.get(s) || []), p.blocks.reduce((a, b) => a + b[s], 0)]);
    }
    profile[B] = Object.fromEntries([...runs].map(([k, v]) => [k, median(v) / B]));
  }
  for (const e of entries) e.dispose();
  return { machine, results, profile, slots };
}

function report({ machine, results, profile, slots }) {
  const lines = [
    '## Shunted Transformer against DeiT-S (CPU)',
    '',
    'Written by `node bench/shunted.js`.',
    '',
    '### Machine',
    '',
    table(['', ''], machineRows(machine)),
    '',
    '### Models',
    '',
    'Shunted-T and Shunted-S as released (`shunted_t`, `shunted_s`: embed dims 64/128/256/512, heads 2/4/8/16, sr ratios 8/4/2/1),',
    'DeiT-S (`deit_small_patch16_224`), 224 px, 1000 classes, seeded random weights (normal, std 0.02; LayerNorm weights 1), fp32;',
    'safetensors checkpoints written and loaded with `loadModel` (the Shunted stem BatchNorms folded at load), CPU backend.',
    'FLOPs are 2 per multiply-accumulate: for Shunted every convolution (stem BatchNorms folded), linear layer, q·kᵀ and attn·v',
    '(`count_macs` of tools/reference/shunted_reference.py: 2.147 / 4.993 GMAC for T / S); for DeiT-S as in the section above.',
    'Configurations of one batch size are timed round-robin; ratios are within this run.',
    '',
    '### Throughput',
    '',
    table(
      ['batch', 'model', 'GFLOP/img', 'runs', 'median ms', 'img/s', 'GFLOP/s', 'vs DeiT-S dense'],
      results.map((r) => [r.batch, r.model, fmt(r.gflopPerImage, 3), r.runs, fmt(r.medianMs, 1), fmt(r.imgPerSec, 2), fmt(r.gflops, 1), `${fmt(r.vsDeitDense, 2)}×`]),
    ),
    '',
    '### Where a Shunted-T pass goes (ms per image, profiled runs)',
    '',
    'Model slots: `stem` (the convolutional stem and its LayerNorm), `patchEmbed` (the three OverlapPatchEmbeds), `stageNorm`, `head`',
    '(mean over tokens and the classifier). Block slots, summed over the 8 blocks: `kv` is the sr convolutions with their LayerNorm',
    'and GELU, the kv GEMMs and the local convolutions; `dwconv` is the MLP\'s depthwise convolution with its add and GELU.',
    '',
    table(['slot', ...BATCHES.map((b) => `batch ${b}`)], [...slots.model, ...slots.block].map((s) => [s, ...BATCHES.map((b) => fmt(profile[b][s], 2))])),
    '',
  ];
  return lines.join('\n');
}

main().then((res) => {
  const md = report(res);
  const out = path.join(__dirname, 'results', QUICK ? 'shunted-quick.json' : 'shunted.json');
  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.writeFileSync(out, `${JSON.stringify(res, null, 2)}\n`);
  if (QUICK) fs.writeFileSync(path.join(__dirname, 'results', 'shunted-quick.md'), md);
  else writeSection('shunted', md);
  process.stdout.write(md);
}, (err) => {
  console.error(err);
  process.exitCode = 1;
});
