'use strict';
/**
 * Helpers shared by the benchmark scripts: seeded random weights and inputs, medians and
 * round-robin timing, the machine's description, markdown tables, and the onnxruntime-node
 * peer (ONNX export with Debian's python3 + torch, then an InferenceSession).
 */
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');

/** DeiT shapes of the benchmarks (timm's deit_{tiny,small,base}_patch16_224). */
const DEIT = {
  'DeiT-T': { arch: 'deit_tiny_patch16_224', embed: 192, heads: 3 },
  'DeiT-S': { arch: 'deit_small_patch16_224', embed: 384, heads: 6 },
  'DeiT-B': { arch: 'deit_base_patch16_224', embed: 768, heads: 12 },
};

const ORT_INSTALL = 'ONNXRUNTIME_NODE_INSTALL=skip npm install --no-save onnxruntime-node';

function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** n normal samples of standard deviation `std` (Box–Muller). */
function normalFill(rand, n, std) {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const u = 1 - rand();
    const v = rand();
    const r = std * Math.sqrt(-2 * Math.log(u));
    out[i] = r * Math.cos(2 * Math.PI * v);
    if (i + 1 < n) out[i + 1] = r * Math.sin(2 * Math.PI * v);
  }
  return out;
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** The q-quantile (0..1) by linear interpolation between order statistics. */
function quantile(xs, q) {
  const s = [...xs].sort((a, b) => a - b);
  const at = (s.length - 1) * q;
  const lo = Math.floor(at);
  return lo + 1 < s.length ? s[lo] + (s[lo + 1] - s[lo]) * (at - lo) : s[lo];
}

const nowMs = () => Number(process.hrtime.bigint()) / 1e6;
const fmt = (x, d = 1) => (Number.isFinite(x) ? x.toFixed(d).replace(/^-(0\.?0*)$/, '$1') : 'n/a');

function table(header, rows) {
  const line = (cells) => `| ${cells.join(' | ')} |`;
  return [line(header), line(header.map(() => '---')), ...rows.map(line)].join('\n');
}

/** RFC 4180 CSV of `rows` (objects) with the given columns. */
function toCsv(columns, rows) {
  const cell = (v) => {
    if (v === null || v === undefined || (typeof v === 'number' && !Number.isFinite(v))) return '';
    const s = typeof v === 'number' ? String(Number(v.toPrecision(6))) : String(v);
    return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
  };
  return [columns.join(','), ...rows.map((r) => columns.map((c) => cell(r[c])).join(','))].join('\n') + '\n';
}

/**
 * The state dict of a timm ViT with seeded random weights (normal, std 0.02; LayerNorm
 * weights 1, biases 0), as a Map name → { dtype, shape, data }.
 * dims: { embed, depth, patch, inChans, gridH, gridW, mlp, classes }.
 */
function randomTensors(dims, seed = 1234) {
  const rand = mulberry32(seed);
  const { embed: C, depth, patch: p, inChans, mlp, classes } = dims;
  const P = dims.gridH * dims.gridW;
  const t = new Map();
  const add = (name, shape, data) => t.set(name, { dtype: 'F32', shape, data });
  const rnd = (shape, std = 0.02) => normalFill(rand, shape.reduce((a, b) => a * b, 1), std);
  const ones = (n) => new Float32Array(n).fill(1);
  add('cls_token', [1, 1, C], rnd([1, 1, C]));
  add('pos_embed', [1, 1 + P, C], rnd([1, 1 + P, C]));
  add('patch_embed.proj.weight', [C, inChans, p, p], rnd([C, inChans, p, p]));
  add('patch_embed.proj.bias', [C], rnd([C]));
  for (let i = 0; i < depth; i++) {
    const b = `blocks.${i}`;
    add(`${b}.norm1.weight`, [C], ones(C));
    add(`${b}.norm1.bias`, [C], new Float32Array(C));
    add(`${b}.attn.qkv.weight`, [3 * C, C], rnd([3 * C, C]));
    add(`${b}.attn.qkv.bias`, [3 * C], rnd([3 * C]));
    add(`${b}.attn.proj.weight`, [C, C], rnd([C, C]));
    add(`${b}.attn.proj.bias`, [C], rnd([C]));
    add(`${b}.norm2.weight`, [C], ones(C));
    add(`${b}.norm2.bias`, [C], new Float32Array(C));
    add(`${b}.mlp.fc1.weight`, [mlp, C], rnd([mlp, C]));
    add(`${b}.mlp.fc1.bias`, [mlp], rnd([mlp]));
    add(`${b}.mlp.fc2.weight`, [C, mlp], rnd([C, mlp]));
    add(`${b}.mlp.fc2.bias`, [C], rnd([C]));
  }
  add('norm.weight', [C], ones(C));
  add('norm.bias', [C], new Float32Array(C));
  add('head.weight', [classes, C], rnd([classes, C]));
  add('head.bias', [classes], rnd([classes]));
  return t;
}

/** Writes `randomTensors(dims, seed)` as a safetensors file. */
function writeRandomCheckpoint(file, dims, seed = 1234, note = 'random weights for benchmarking') {
  const evit = require('../dist');
  const t = randomTensors(dims, seed);
  fs.writeFileSync(file, evit.serializeSafetensors(t, { format: 'pt', note }));
  return t;
}

/** A [batch, inChans, h, w] float32 input, uniform in [-2, 2). */
function randomImages(batch, inChans, h, w, seed = 99) {
  const rand = mulberry32(seed);
  const data = new Float32Array(batch * inChans * h * w);
  for (let i = 0; i < data.length; i++) data[i] = rand() * 4 - 2;
  return { data, shape: [batch, inChans, h, w] };
}

/**
 * Times `entries` ([{ run: async () => void, settleMs? }]) round-robin: `budget.warmups` (default 2)
 * untimed runs each, then rounds until about `budget.seconds` per entry (at least minRounds, at
 * most maxRounds). Fills `e.times` (ms per timed run) and returns the number of rounds.
 * `onRound(r, rounds)` is called after each round.
 */
async function timeRoundRobin(entries, budget, onRound) {
  const warmups = budget.warmups ?? 2;
  for (const e of entries) {
    const t0 = nowMs();
    await e.run();
    e.firstMs = nowMs() - t0;
    for (let i = 1; i < warmups; i++) await e.run();
  }
  const perRound = entries.reduce((a, e) => a + e.firstMs, 0) / entries.length;
  const rounds = Math.max(budget.minRounds, Math.min(budget.maxRounds, Math.ceil((budget.seconds * 1000) / perRound)));
  for (const e of entries) e.times = [];
  for (let r = 0; r < rounds; r++) {
    for (const e of entries) {
      // Engines whose idle threads spin after a run (onnxruntime's and evit's pools both do)
      // would steal cores from the next engine's run: let them settle first.
      if (e.settleMs) await new Promise((resolve) => setTimeout(resolve, e.settleMs));
      const t0 = nowMs();
      await e.run();
      e.times.push(nowMs() - t0);
    }
    if (onRound) onRound(r + 1, rounds);
  }
  return rounds;
}

function cpuModel() {
  try {
    const m = fs.readFileSync('/proc/cpuinfo', 'utf8').match(/^model name\s*:\s*(.*)$/m);
    if (m) return m[1].trim();
  } catch {
    /* not Linux */
  }
  return os.cpus()[0]?.model ?? 'unknown';
}

/** What a benchmark report says about the machine it ran on. */
function machineInfo(info) {
  return {
    date: new Date().toISOString(),
    cpu: cpuModel(),
    cores: os.cpus().length,
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
    blas: info.cpu.blas,
    blasCore: info.cpu.blasCore,
    openblasCoretype: process.env.OPENBLAS_CORETYPE ?? null,
    threads: info.cpu.threads,
    simd: info.cpu.simd,
    gpus: info.cuda.available ? info.cuda.devices.map((d) => `${d.name} (sm ${d.computeCapability})`) : [],
    cudaReason: info.cuda.available ? null : info.cuda.reason,
  };
}

/** The machine as markdown table rows. */
function machineRows(m) {
  return [
    ['date', m.date],
    ['CPU', `${m.cpu} (${m.cores} cores visible)`],
    ['Node', `${m.node} (${m.platform})`],
    ['BLAS', `${m.blas} (core: ${m.blasCore}${m.openblasCoretype ? `, OPENBLAS_CORETYPE=${m.openblasCoretype}` : ''})`],
    ['evit CPU threads', `${m.threads}, ${m.simd} kernels`],
    ['GPU', m.gpus.length ? m.gpus.join(', ') : `none used (${m.cudaReason})`],
  ];
}

/** The backends to measure: every one backendInfo() says is available, CPU first. */
function availableBackends(info) {
  const out = ['cpu'];
  if (info.cuda.available) out.push('cuda');
  return out;
}

// ---------------------------------------------------------------- onnxruntime-node peer

function requireOrt() {
  try {
    return require('onnxruntime-node');
  } catch (err) {
    return { skipped: `onnxruntime-node is not installed (${err.message.split('\n')[0]}); install it with \`${ORT_INSTALL}\`` };
  }
}

function ortVersion() {
  try {
    return require('onnxruntime-node/package.json').version;
  } catch {
    /* exports map may hide it */
    try {
      return JSON.parse(fs.readFileSync(require.resolve('onnxruntime-node').replace(/dist[\\/].*$/, 'package.json'), 'utf8')).version;
    } catch {
      return 'unknown';
    }
  }
}

/** Exports a safetensors checkpoint to ONNX with bench/export_onnx.py; returns { torch } or a reason string. */
function exportOnnx(ckpt, onnxFile, heads) {
  const python = '/usr/bin/python3';
  if (!fs.existsSync(python)) return `${python} not found`;
  const probe = spawnSync(python, ['-c', 'import torch; print(torch.__version__)'], { encoding: 'utf8', timeout: 120000 });
  if (probe.status !== 0) return `${python} has no torch (${(probe.stderr || '').trim().split('\n').pop()})`;
  const r = spawnSync(python, [path.join(__dirname, 'export_onnx.py'), ckpt, onnxFile, '--heads', String(heads)], {
    encoding: 'utf8',
    timeout: 240000,
  });
  if (r.status !== 0 || !fs.existsSync(onnxFile)) {
    const why = (r.stderr || r.error?.message || `exit ${r.status}`).trim().split('\n').slice(-3).join(' | ');
    return `ONNX export failed: ${why}`;
  }
  return { torch: probe.stdout.trim() };
}

/** An onnxruntime-node CPU session on `threads` intra-op threads, or { skipped }. */
async function ortSession(onnxFile, threads) {
  const ort = requireOrt();
  if (ort.skipped) return ort;
  try {
    const session = await ort.InferenceSession.create(onnxFile, {
      intraOpNumThreads: threads,
      interOpNumThreads: 1,
      graphOptimizationLevel: 'all',
      executionMode: 'sequential',
      executionProviders: ['cpu'],
    });
    return { ort, session, version: ortVersion() };
  } catch (err) {
    return { skipped: `onnxruntime-node could not load the model: ${err.message.split('\n')[0]}` };
  }
}

module.exports = {
  DEIT, ORT_INSTALL, mulberry32, normalFill, median, quantile, nowMs, fmt, table, toCsv, randomTensors, writeRandomCheckpoint,
  randomImages, timeRoundRobin, cpuModel, machineInfo, machineRows, availableBackends, requireOrt, ortVersion, exportOnnx, ortSession,
};
