#!/usr/bin/env node
'use strict';
/**
 * End-to-end forward benchmark on the CPU backend (SPEC §5).
 *
 *   npm run bench                      (needs `npm run build` first)
 *   node bench/forward.js --quick      (a few runs of everything, for smoke tests)
 *
 * Builds a DeiT-S-shaped model with seeded random weights, then measures:
 *   - the machine's FMA peak with the addon's loops (binding.testing.ops.measureFmaPeak): 256-bit (AVX2) and,
 *     where the CPU has it, 512-bit (AVX-512) FMAs; 1 and 2 threads, median of 3. "% of peak"
 *     is against the widest measured peak (the machine's real ceiling), with the AVX2 share
 *     kept alongside;
 *   - img/s of dense, keep 0.7 and keep 0.5 (fused, blocks 3/6/9) at batch 1 and 8,
 *     the speedup over dense of the same batch, and achieved GFLOP/s (analytic
 *     FLOPs of the schedule / median time) as a share of the peak;
 *   - per-op times inside the real forward pass (`forward(..., { profile: true })`), in runs
 *     of their own since profiling adds a clock read per op: where a dense block goes, and
 *     what reorganisation (top-k + gather + fusion, plus the class-token score row that
 *     attention produces on dropping blocks) costs against the attention it follows;
 *   - onnxruntime-node running the same dense model at batch 8 on 2 intra-op
 *     threads, when onnxruntime-node and Debian's python3 with torch are present
 *     (bench/export_onnx.py writes the ONNX file from the same safetensors file);
 *   - when OPENBLAS_CORETYPE is set, batch 8 (and the onnxruntime-node comparison) again in
 *     a child process without it, i.e. with the kernels OpenBLAS would pick for this CPU.
 *
 * Configurations of one batch size are timed round-robin, so machine noise
 * hits them alike; ratios are taken within this one run. Nothing here asserts
 * on time. Writes its section of docs/BENCHMARKS.md and bench/results/forward.json;
 * with --quick, bench/results/quick.md and bench/results/quick.json instead;
 * with --from-json, only the section again from bench/results/forward.json.
 *
 * Environment: EVIT_BENCH_SCALE (default 1) scales the timing budgets.
 */
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');

const ROOT = path.resolve(__dirname, '..');
const evit = require('../dist');
const { loadBinding, profileSlots } = require('../dist/native');
const { writeSection } = require('./report');
const {
  median, nowMs, fmt, table, writeRandomCheckpoint, randomImages, timeRoundRobin, machineInfo, requireOrt, ortVersion,
  exportOnnx: exportOnnxWith,
} = require('./common');

const QUICK = process.argv.includes('--quick');
const FROM_JSON = process.argv.includes('--from-json');
const ARCH = 'deit_small_patch16_224';
const DIM = { embed: 384, depth: 12, heads: 6, patch: 16, img: 224, mlp: 1536, classes: 1000, inChans: 3 };
const THREADS = 2;
const DROP_LOC = [3, 6, 9];
const KEEP_RATES = [0.7, 0.5];
const SCALE = Number(process.env.EVIT_BENCH_SCALE) > 0 ? Number(process.env.EVIT_BENCH_SCALE) : 1;
const CONFIGS = [
  { name: 'dense', options: { keepRate: 1 } },
  ...KEEP_RATES.map((r) => ({ name: `keep ${r} fused`, options: { keepRate: r, fuse: true, dropLoc: DROP_LOC } })),
];
// Timed seconds per configuration (split across round-robin rounds), and round limits.
const BUDGET = QUICK
  ? { 1: { seconds: 0.5, minRounds: 3, maxRounds: 5 }, 8: { seconds: 1, minRounds: 3, maxRounds: 3 } }
  : { 1: { seconds: 6 * SCALE, minRounds: 7, maxRounds: 300 }, 8: { seconds: 10 * SCALE, minRounds: 5, maxRounds: 80 } };
// The same for the profiled runs (per configuration; there are more configurations there).
const PROFILE_BUDGET = QUICK
  ? { 1: { seconds: 0.3, minRounds: 3, maxRounds: 3 }, 8: { seconds: 1, minRounds: 3, maxRounds: 3 } }
  : { 1: { seconds: 3 * SCALE, minRounds: 15, maxRounds: 200 }, 8: { seconds: 5 * SCALE, minRounds: 9, maxRounds: 60 } };
const PEAK_SECONDS = QUICK ? 0.25 : 1;
const TARGET_PEAK = 0.7;
const TARGET_SPEEDUP = 1.45;
const TARGET_REORG = 0.05;

const log = (msg) => process.stderr.write(`[bench] ${msg}\n`);

// ---------------------------------------------------------------- model

function makeCheckpoint(file, seed = 1234) {
  const grid = DIM.img / DIM.patch;
  const dims = { embed: DIM.embed, depth: DIM.depth, patch: DIM.patch, inChans: DIM.inChans, gridH: grid, gridW: grid, mlp: DIM.mlp, classes: DIM.classes };
  return writeRandomCheckpoint(file, dims, seed, 'random DeiT-S weights for benchmarking');
}

function makeImages(batch, seed = 99) {
  return randomImages(batch, DIM.inChans, DIM.img, DIM.img, seed);
}

/** Multiply-add FLOPs (2 per MAC) of one image through a schedule; per-part breakdown. */
function scheduleFlops(schedule) {
  const { embed: C, depth, patch: p, mlp, classes, inChans } = DIM;
  const P = (DIM.img / p) ** 2;
  const parts = { patchEmbed: 2 * P * C * inChans * p * p, qkv: 0, attention: 0, proj: 0, mlp: 0, head: 2 * C * classes };
  let n = P; // image tokens entering the block
  for (let i = 0; i < depth; i++) {
    const N = 1 + n;
    const Nout = 1 + schedule.tokenCounts[i];
    parts.qkv += 2 * N * C * 3 * C;
    parts.attention += 2 * 2 * N * N * C;
    parts.proj += 2 * N * C * C;
    parts.mlp += 2 * 2 * Nout * C * mlp;
    n = schedule.tokenCounts[i];
  }
  const total = Object.values(parts).reduce((a, b) => a + b, 0);
  return { total, parts };
}

// ---------------------------------------------------------------- machine

const WIDTH_LABEL = { avx2: 'AVX2', avx512: 'AVX-512' };

/**
 * FMA peak of 256-bit (AVX2) and 512-bit (AVX-512) loops, 1 and THREADS threads, median of 3.
 * ops.measureFmaPeak returns 0 for a width the CPU lacks. `widest` names the one "% of peak" uses.
 */
function measurePeak(ops) {
  const peak = { seconds: PEAK_SECONDS };
  for (const width of ['avx2', 'avx512']) {
    const w = {};
    for (const t of [1, THREADS]) {
      const runs = [];
      for (let i = 0; i < 3; i++) runs.push(ops.measureFmaPeak(t, PEAK_SECONDS, width));
      if (!runs.every((r) => r > 0)) {
        w.skipped = `the CPU has no ${WIDTH_LABEL[width]}`;
        break;
      }
      w[t] = { median: median(runs), runs };
      log(`FMA peak (${WIDTH_LABEL[width]}) ${t} thread${t > 1 ? 's' : ''}: ${fmt(w[t].median)} GFLOP/s (runs ${runs.map((r) => fmt(r)).join(', ')})`);
    }
    if (w.skipped) {
      peak[width] = { skipped: w.skipped };
      log(`FMA peak (${WIDTH_LABEL[width]}) not measured: ${w.skipped}`);
    } else {
      peak[width] = w;
    }
  }
  peak.widest = peak.avx512?.[THREADS] ? 'avx512' : peak.avx2?.[THREADS] ? 'avx2' : null;
  // On an idle machine THREADS threads give about THREADS× one thread; much less means another
  // process held a core during the measurement, and every "% of peak" below reads high.
  if (peak.widest) {
    const w = peak[peak.widest];
    peak.threadScaling = w[THREADS].median / w[1].median;
    if (peak.threadScaling < 0.8 * THREADS) {
      log(`warning: the ${THREADS}-thread peak is only ${fmt(peak.threadScaling, 2)}× the 1-thread one: the machine was busy`);
    }
  }
  return peak;
}

/** The ceiling "% of peak" is taken against: the widest measured peak on THREADS threads. */
const peakCeiling = (peak, threads = THREADS) => (peak.widest ? peak[peak.widest][threads].median : NaN);

/** Achieved GFLOP/s as a percentage of the widest peak, and of the AVX2 peak. */
function pctOf(peak, gflops) {
  return {
    pctPeak: (100 * gflops) / peakCeiling(peak),
    pctPeakAvx2: peak.avx2?.[THREADS] ? (100 * gflops) / peak.avx2[THREADS].median : null,
  };
}

// ---------------------------------------------------------------- evit timing

async function benchEvit(model, peak, batches = [1, 8], label = '') {
  const rows = [];
  for (const batch of batches) {
    const input = makeImages(batch);
    const entries = CONFIGS.map((cfg) => ({
      cfg,
      schedule: model.scheduleFor(cfg.options),
      run: () => model.forward(input, cfg.options),
    }));
    // The schedule that actually ran, from the forward output.
    for (const e of entries) {
      const out = await model.forward(input, e.cfg.options);
      e.schedule = out.schedule;
    }
    const rounds = await timeRoundRobin(entries, BUDGET[batch]);
    const dense = median(entries[0].times);
    for (const e of entries) {
      const ms = median(e.times);
      const flops = scheduleFlops(e.schedule);
      const gflops = (flops.total * batch) / (ms / 1000) / 1e9;
      const row = {
        batch,
        config: e.cfg.name,
        options: e.cfg.options,
        tokenCounts: [...e.schedule.tokenCounts],
        runs: e.times.length,
        medianMs: ms,
        minMs: Math.min(...e.times),
        maxMs: Math.max(...e.times),
        imgPerSec: (batch * 1000) / ms,
        speedupVsDense: dense / ms,
        gflopPerImage: flops.total / 1e9,
        flopRatioVsDense: scheduleFlops(entries[0].schedule).total / flops.total,
        gflops,
        ...pctOf(peak, gflops),
      };
      rows.push(row);
      log(
        `${label}batch ${batch} ${e.cfg.name.padEnd(15)} ${fmt(row.imgPerSec, 2)} img/s  median ${fmt(ms, 1)} ms ` +
          `(${rounds} runs)  x${fmt(row.speedupVsDense, 2)} vs dense  ${fmt(gflops)} GFLOP/s = ${fmt(row.pctPeak)}% of peak` +
          (row.pctPeakAvx2 != null && peak.widest !== 'avx2' ? ` (${fmt(row.pctPeakAvx2)}% of the AVX2 peak)` : ''),
      );
    }
  }
  return rows;
}

// ---------------------------------------------------------------- per-op profile

/**
 * The profiled configurations: dense, each keep rate on DROP_LOC, and for each dropping block L
 * after the first a reference schedule that drops only at the blocks before L, so that block L
 * runs dense on the same token count (no score row, no reorganisation). Block DROP_LOC[0]'s
 * reference is the dense run.
 */
function profileConfigs() {
  const cfgs = [{ key: 'dense', keepRate: null, options: { keepRate: 1 } }];
  for (const r of KEEP_RATES) {
    cfgs.push({ key: `keep ${r}`, keepRate: r, options: { keepRate: r, fuse: true, dropLoc: DROP_LOC } });
    for (const L of DROP_LOC.slice(1)) {
      const before = DROP_LOC.filter((b) => b < L);
      cfgs.push({ key: `keep ${r}, drop at ${before.join('/')} only`, keepRate: r, refFor: L, options: { keepRate: r, fuse: true, dropLoc: before } });
    }
  }
  return cfgs;
}

/** Per-op FLOPs of one block at N tokens (class token included), batch B. */
function blockOpFlops(B, N) {
  const { embed: C, mlp } = DIM;
  return { qkv: 2 * B * N * C * 3 * C, attention: 2 * 2 * B * N * N * C, proj: 2 * B * N * C * C, fc1: 2 * B * N * C * mlp, fc2: 2 * B * N * mlp * C };
}

async function profilePhase(model, peak, batches = [1, 8]) {
  const PROFILE_OPS = profileSlots().block;
  const out = { batches: [] };
  for (const batch of batches) {
    const input = makeImages(batch);
    const entries = profileConfigs().map((cfg) => ({ ...cfg, schedule: model.scheduleFor(cfg.options), profiles: [], wallMs: [] }));
    const run = (e) => model.forward(input, { ...e.options, profile: true });
    let perRound = 0;
    for (const e of entries) {
      await run(e); // warm-up
      const t0 = nowMs();
      const o = await run(e);
      perRound += nowMs() - t0;
      e.schedule = o.schedule;
    }
    const budget = PROFILE_BUDGET[batch];
    const rounds = Math.max(budget.minRounds, Math.min(budget.maxRounds, Math.ceil((budget.seconds * 1000 * entries.length) / perRound)));
    for (let r = 0; r < rounds; r++) {
      for (const e of entries) {
        const t0 = nowMs();
        const o = await run(e);
        e.wallMs.push(nowMs() - t0);
        e.profiles.push(o.profile);
      }
    }
    const med = (e, f) => median(e.profiles.map(f));
    const dense = entries[0];

    // Where a dense block goes: block 0 of the dense run, median per op.
    const N0 = 1 + dense.profiles[0].blocks[0].tokens;
    const flops = blockOpFlops(batch, N0);
    const ops = PROFILE_OPS.filter((op) => op !== 'reorganise').map((op) => ({ op, ms: med(dense, (p) => p.blocks[0][op]) }));
    const blockMs = ops.reduce((a, x) => a + x.ms, 0);
    for (const x of ops) {
      x.share = x.ms / blockMs;
      if (flops[x.op]) {
        x.gflops = flops[x.op] / (x.ms / 1000) / 1e9;
        Object.assign(x, pctOf(peak, x.gflops));
      }
    }
    const P = (DIM.img / DIM.patch) ** 2;
    const extra = [
      { op: 'patchEmbed', ms: med(dense, (p) => p.patchEmbed), flopsAll: 2 * batch * P * DIM.embed * DIM.inChans * DIM.patch ** 2 },
      { op: 'head', ms: med(dense, (p) => p.head) },
    ];
    for (const x of extra) {
      if (x.flopsAll) {
        x.gflops = x.flopsAll / (x.ms / 1000) / 1e9;
        Object.assign(x, pctOf(peak, x.gflops));
        delete x.flopsAll;
      }
    }
    const profileTotal = (p) => p.patchEmbed + p.head + p.blocks.reduce((a, b) => a + PROFILE_OPS.reduce((s, op) => s + b[op], 0), 0);
    const denseBlock = {
      batch,
      tokens: N0,
      rounds,
      ops,
      extra,
      blockMs,
      perBlockMs: Array.from({ length: DIM.depth }, (_, i) => med(dense, (p) => PROFILE_OPS.reduce((s, op) => s + p.blocks[i][op], 0))),
      profileTotalMs: med(dense, profileTotal),
      profiledWallMs: median(dense.wallMs),
    };

    // Reorganisation against the attention it follows, per dropping block.
    const reorganisation = [];
    for (const e of entries.filter((x) => x.keepRate != null && x.refFor == null)) {
      for (const L of e.schedule.dropBlocks) {
        const ref = L === DROP_LOC[0] ? dense : entries.find((x) => x.keepRate === e.keepRate && x.refFor === L);
        const tokens = e.profiles[0].blocks[L].tokens;
        if (!ref || ref.profiles[0].blocks[L].tokens !== tokens || ref.schedule.keep[L] !== -1) {
          throw new Error(`no dense reference for block ${L} of ${e.key} at ${tokens} tokens`);
        }
        const attentionMs = med(e, (p) => p.blocks[L].attention);
        const reorganiseMs = med(e, (p) => p.blocks[L].reorganise);
        const denseAttentionMs = med(ref, (p) => p.blocks[L].attention);
        const scoreRowMs = attentionMs - denseAttentionMs;
        const row = {
          batch,
          keepRate: e.keepRate,
          block: L,
          tokens,
          kept: e.schedule.keep[L],
          tokensOut: e.schedule.tokenCounts[L],
          reference: ref.key,
          attentionMs,
          denseAttentionMs,
          scoreRowMs,
          reorganiseMs,
          share: med(e, (p) => p.blocks[L].reorganise / p.blocks[L].attention),
          shareWithScoreRow: (reorganiseMs + scoreRowMs) / denseAttentionMs,
        };
        reorganisation.push(row);
        log(`profile batch ${batch} keep ${e.keepRate} block ${L} (${tokens} tokens): attention ${fmt(attentionMs, 3)} ms ` +
          `(dense at the same N ${fmt(denseAttentionMs, 3)} ms, score row ${fmt(scoreRowMs, 3)} ms), reorganise ${fmt(reorganiseMs, 3)} ms ` +
          `= ${fmt(100 * row.share)}% of attention, ${fmt(100 * row.shareWithScoreRow)}% with the score row`);
      }
    }
    log(`profile batch ${batch}: dense block 0 ${fmt(blockMs, 2)} ms (${ops.map((x) => `${x.op} ${fmt(100 * x.share)}%`).join(', ')}), ${rounds} rounds`);
    out.batches.push({
      batch,
      rounds,
      configs: entries.map((e) => ({ key: e.key, options: e.options, tokenCounts: [...e.schedule.tokenCounts], profiledWallMs: median(e.wallMs) })),
      denseBlock,
      reorganisation,
    });
  }
  return out;
}

// ---------------------------------------------------------------- onnxruntime peer

function exportOnnx(ckpt, onnxFile) {
  return exportOnnxWith(ckpt, onnxFile, DIM.heads);
}

/** Exports the ONNX file once; the parent and the child process both time against it. */
function prepareOrt(ckpt, dir) {
  const ort = requireOrt();
  if (ort.skipped) return ort;
  const onnxFile = path.join(dir, 'deit_small.onnx');
  log('exporting the ONNX model with /usr/bin/python3 (torch)…');
  const exp = exportOnnx(ckpt, onnxFile);
  if (typeof exp === 'string') return { skipped: exp };
  return { onnxFile, torch: exp.torch };
}

/** evit dense against onnxruntime-node at batch 8: same input, same threads, alternating run by run. */
async function benchOrt(model, prep, peak, label = '') {
  if (prep.skipped) return prep;
  const ort = requireOrt();
  if (ort.skipped) return ort;
  let session;
  try {
    session = await ort.InferenceSession.create(prep.onnxFile, {
      intraOpNumThreads: THREADS,
      interOpNumThreads: 1,
      graphOptimizationLevel: 'all',
      executionMode: 'sequential',
      executionProviders: ['cpu'],
    });
  } catch (err) {
    return { skipped: `onnxruntime-node could not load the model: ${err.message.split('\n')[0]}` };
  }
  const version = ortVersion();
  const batch = 8;
  const input = makeImages(batch);
  const feeds = { input: new ort.Tensor('float32', input.data, input.shape) };
  const ortOut = (await session.run(feeds)).logits.data;
  const ours = (await model.forward(input, { keepRate: 1 })).logits;
  let maxDiff = 0;
  let maxAbs = 0;
  for (let i = 0; i < ours.length; i++) {
    maxDiff = Math.max(maxDiff, Math.abs(ours[i] - ortOut[i]));
    maxAbs = Math.max(maxAbs, Math.abs(ours[i]));
  }
  log(`${label}onnxruntime-node ${version} vs evit dense logits (batch 8): max abs diff ${maxDiff.toExponential(2)} (max |logit| ${fmt(maxAbs, 3)})`);

  const entries = [
    { key: 'evit', settleMs: 50, run: () => model.forward(input, { keepRate: 1 }) },
    { key: 'ort', settleMs: 50, run: () => session.run(feeds) },
  ];
  const rounds = await timeRoundRobin(entries, BUDGET[8]);
  const flops = scheduleFlops(model.scheduleFor({ keepRate: 1 })).total * batch;
  const res = { version, torch: prep.torch, batch, rounds, maxAbsDiff: maxDiff, maxAbsLogit: maxAbs };
  for (const e of entries) {
    const ms = median(e.times);
    const gflops = flops / (ms / 1000) / 1e9;
    res[e.key] = { medianMs: ms, imgPerSec: (batch * 1000) / ms, gflops, ...pctOf(peak, gflops) };
  }
  res.evitOverOrt = res.ort.medianMs / res.evit.medianMs;
  log(
    `${label}batch 8 dense: evit ${fmt(res.evit.imgPerSec, 2)} img/s, onnxruntime-node ${fmt(res.ort.imgPerSec, 2)} img/s ` +
      `(evit x${fmt(res.evitOverOrt, 2)}, ${rounds} runs each)`,
  );
  if (typeof session.release === 'function') await session.release();
  return res;
}

// ---------------------------------------------------------------- OpenBLAS kernel choice

/**
 * OPENBLAS_CORETYPE is an environment setting: when set, OpenBLAS runs the kernels it names
 * instead of the ones it would pick for this CPU. OpenBLAS reads it once, when the library loads,
 * so batch 8 and the onnxruntime-node comparison are timed again in a child process without it.
 */
function benchWithoutCoretype(ckpt, ortPrep, peak) {
  if (!process.env.OPENBLAS_CORETYPE) return null;
  const env = { ...process.env };
  delete env.OPENBLAS_CORETYPE;
  log(`OPENBLAS_CORETYPE=${process.env.OPENBLAS_CORETYPE} is set; timing batch 8 again without it in a child process…`);
  const args = [__filename, '--child', ckpt, JSON.stringify(ortPrep), JSON.stringify(peak), ...(QUICK ? ['--quick'] : [])];
  const r = spawnSync(process.execPath, args, {
    env,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
    timeout: 600000,
    maxBuffer: 16 << 20,
  });
  if (r.status !== 0) return { skipped: `the child run failed (${r.error?.message ?? `exit ${r.status}`})` };
  try {
    return JSON.parse(r.stdout);
  } catch (err) {
    return { skipped: `the child run printed no result (${err.message})` };
  }
}

async function childMain(ckpt, ortPrepJson, peakJson) {
  const peak = JSON.parse(peakJson);
  const ortPrep = JSON.parse(ortPrepJson);
  const model = await evit.loadModel(ckpt, { arch: ARCH, threads: THREADS });
  const info = evit.backendInfo();
  const label = `[OpenBLAS ${info.cpu.blasCore}] `;
  const rows = await benchEvit(model, peak, [8], label);
  let ort;
  try {
    ort = await benchOrt(model, ortPrep, peak, label);
  } catch (err) {
    ort = { skipped: `onnxruntime-node run failed: ${err.message.split('\n')[0]}` };
  }
  model.dispose();
  process.stdout.write(JSON.stringify({ blas: info.cpu.blas, blasCore: info.cpu.blasCore, rows, ort }));
}

// ---------------------------------------------------------------- report

const range = (xs, d = 1) => {
  const lo = Math.min(...xs);
  const hi = Math.max(...xs);
  return Math.abs(hi - lo) < 10 ** -d ? `${fmt(lo, d)}%` : `${fmt(lo, d)}% to ${fmt(hi, d)}%`;
};

function writeReport(r) {
  const peak = r.peak;
  const wide = peak.widest;
  const ceiling = peakCeiling(peak);
  const twoPct = wide != null && wide !== 'avx2' && peak.avx2?.[THREADS] != null;
  const pc = (x) => (x == null ? '—' : `${fmt(x)}%`);
  const pctHeads = twoPct ? ['% of peak', '% of AVX2 peak'] : ['% of peak'];
  const pctCells = (x) => (twoPct ? [pc(x.pctPeak), pc(x.pctPeakAvx2)] : [pc(x.pctPeak)]);
  const noPct = () => pctHeads.map(() => '—');
  const m = r.machine;
  const ct = r.coretype;
  const child = ct?.without && !ct.without.skipped ? ct.without : null;
  const forced = m.openblasCoretype;
  const kernelsLabel = (core, isForced) => `${core}, ${isForced ? `forced by OPENBLAS_CORETYPE` : "OpenBLAS's own choice"}`;

  const md = [];
  md.push('## CPU forward pass');
  md.push('');
  if (QUICK) {
    md.push('**Quick run** (`node bench/forward.js --quick`): a few runs per number, to check that the benchmark runs');
    md.push('end to end. The numbers are not stable enough to cite; `npm run bench` writes `docs/BENCHMARKS.md`.');
    md.push('');
  }
  md.push(`Generated by \`${QUICK ? 'node bench/forward.js --quick' : 'npm run bench'}\` (\`bench/forward.js\`); do not edit by hand. Raw numbers are in`);
  md.push(`\`bench/results/${QUICK ? 'quick' : 'forward'}.json\`. All ratios are measured within one run on one machine; the`);
  md.push('configurations of a batch size are timed round-robin so that machine noise hits them alike.');
  md.push('');
  md.push('### Machine');
  md.push('');
  const mrows = [
    ['date', m.date],
    ['CPU', `${m.cpu} (${m.cores} cores visible)`],
    ['Node', m.node],
    ['BLAS', `${m.blas} (core: ${m.blasCore}${forced ? `, OPENBLAS_CORETYPE=${forced}` : ''})`],
    ['evit threads', String(THREADS)],
  ];
  for (const width of ['avx2', 'avx512']) {
    const w = peak[width];
    if (w?.[THREADS]) {
      mrows.push([`FMA peak, ${WIDTH_LABEL[width]}, 1 thread`, `${fmt(w[1].median)} GFLOP/s`]);
      mrows.push([`FMA peak, ${WIDTH_LABEL[width]}, ${THREADS} threads`, `${fmt(w[THREADS].median)} GFLOP/s${width === wide ? ' (the peak used below)' : ''}`]);
    } else {
      mrows.push([`FMA peak, ${WIDTH_LABEL[width]}`, `not measured: ${w?.skipped ?? 'unknown'}`]);
    }
  }
  md.push(table(['', ''], mrows));
  md.push('');
  md.push('The peaks are the addon\'s own measurement (`ops.measureFmaPeak`: independent FMA chains in 256-bit');
  md.push(`(AVX2) and, where the CPU has it, 512-bit (AVX-512) registers, median of 3 runs of ${fmt(peak.seconds, 2)} s).`);
  if (wide) {
    md.push(`"% of peak" is against the widest one, ${fmt(ceiling)} GFLOP/s (${WIDTH_LABEL[wide]}) on ${THREADS} threads: the machine's real ceiling.`);
  }
  if (twoPct) {
    md.push(`"% of AVX2 peak" is against the 256-bit figure (${fmt(peak.avx2[THREADS].median)} GFLOP/s, ` +
      `${fmt(ceiling / peak.avx2[THREADS].median, 2)}× below), the ceiling of AVX2-only kernels.`);
  }
  if (peak.threadScaling != null && peak.threadScaling < 0.8 * THREADS) {
    md.push(`**The ${THREADS}-thread peak came out only ${fmt(peak.threadScaling, 2)}× the 1-thread one**: another process held a core`);
    md.push('while it was measured, so the percentages of peak below read too high. Rerun on a quieter machine.');
  }
  md.push('The machine is shared, so single numbers move by several percent between runs; the ratios are');
  md.push('the stable part.');
  md.push('');
  md.push('#### OpenBLAS kernel choice');
  md.push('');
  if (forced) {
    md.push(`\`OPENBLAS_CORETYPE\` is an environment setting of this machine, not part of evit: it forces OpenBLAS to run the`);
    md.push(`kernels it names (here \`${forced}\`) whatever the CPU. Every table below ran under it, except the section`);
    md.push('"OpenBLAS kernels" and the second pair of rows of the onnxruntime-node table, which rerun batch 8 in a child');
    md.push(`process without the variable. A user's machine without \`OPENBLAS_CORETYPE\` gets OpenBLAS's own choice for its CPU` +
      (child ? `: on this CPU that is \`${child.blasCore}\`.` : '.'));
  } else {
    md.push(`\`OPENBLAS_CORETYPE\` is not set here, so OpenBLAS runs its own choice of kernels for this CPU (\`${m.blasCore}\`),`);
    md.push('as it does on a user\'s machine. (Where that environment setting exists it forces OpenBLAS\'s kernel choice.)');
  }
  md.push('');
  md.push('### Model');
  md.push('');
  md.push(`DeiT-S shapes (\`${ARCH}\`): embed ${DIM.embed}, depth ${DIM.depth}, heads ${DIM.heads}, patch ${DIM.patch}, ` +
    `${DIM.img} px (${(DIM.img / DIM.patch) ** 2} patches), MLP ${DIM.mlp}, ${DIM.classes} classes; seeded random weights`);
  md.push('(normal, std 0.02; LayerNorm weights 1), fp32. EViT schedules drop at blocks 3/6/9 with fusion.');
  md.push('FLOPs are analytic, 2 per multiply-add: qkv, attention (q·kᵀ and attn·v), proj and MLP per block');
  md.push('with the schedule\'s token counts, plus patch embedding and head; LayerNorm, softmax, GELU and');
  md.push('the reorganisation itself are not counted.');
  md.push('');
  md.push(`### evit CPU forward${forced ? ` (OPENBLAS_CORETYPE=${forced})` : ''}`);
  md.push('');
  md.push(table(
    ['batch', 'schedule', 'tokens after blocks 3/6/9', 'GFLOP/img', 'runs', 'median ms', 'img/s', 'vs dense', 'FLOP ratio', 'GFLOP/s', ...pctHeads],
    r.evit.map((x) => [
      x.batch, x.config, `${x.tokenCounts[3]} / ${x.tokenCounts[6]} / ${x.tokenCounts[9]}`, fmt(x.gflopPerImage, 3),
      x.runs, fmt(x.medianMs, 1), fmt(x.imgPerSec, 2), `${fmt(x.speedupVsDense, 2)}×`, `${fmt(x.flopRatioVsDense, 2)}×`,
      fmt(x.gflops), ...pctCells(x),
    ]),
  ));
  md.push('');
  md.push('Throughput comes from runs without profiling; the per-op tables below come from separate profiled runs.');
  md.push('');

  const b8 = r.evit.filter((x) => x.batch === 8);
  const k7 = b8.find((x) => x.config === 'keep 0.7 fused');
  const prof8 = r.profile?.batches?.find((x) => x.batch === 8);
  const reorg87 = prof8?.reorganisation.filter((x) => x.keepRate === 0.7) ?? [];
  const ortOk = r.ort && !r.ort.skipped;
  const childOrt = child?.ort && !child.ort.skipped ? child.ort : null;
  md.push('Targets (SPEC §5):');
  md.push('');
  md.push(`- keep 0.7 at batch 8 ≥ ${TARGET_SPEEDUP}× dense: measured ${fmt(k7.speedupVsDense, 2)}× ` +
    `(${k7.speedupVsDense >= TARGET_SPEEDUP ? 'met' : 'not met'} in this run)` +
    (child ? `; with OpenBLAS's own choice (${child.blasCore}) ${fmt(child.rows.find((x) => x.config === 'keep 0.7 fused')?.speedupVsDense, 2)}×.` : '.'));
  {
    const lo = Math.min(...b8.map((x) => x.pctPeak));
    let line = `- GEMM-heavy work at ≥ ${TARGET_PEAK * 100}% of the measured FMA peak: end to end at batch 8, ` +
      `${range(b8.map((x) => x.pctPeak))} of the ${wide ? WIDTH_LABEL[wide] : ''} peak` +
      (forced ? ` with ${forced} kernels` : '') +
      (twoPct ? ` (${range(b8.map((x) => x.pctPeakAvx2))} of the AVX2 peak)` : '');
    if (child) {
      const c = child.rows;
      line += `; with OpenBLAS's own choice (${child.blasCore}) ${range(c.map((x) => x.pctPeak))}` +
        (twoPct ? ` (${range(c.map((x) => x.pctPeakAvx2))} of the AVX2 peak)` : '');
      const clo = Math.min(...c.map((x) => x.pctPeak));
      line += ` (${clo >= TARGET_PEAK * 100 ? 'met' : 'not met'} in this run with OpenBLAS's own choice, ${lo >= TARGET_PEAK * 100 ? 'met' : 'not met'} with ${forced})`;
    } else {
      line += ` (${lo >= TARGET_PEAK * 100 ? 'met' : 'not met'} in this run)`;
    }
    md.push(`${line}; the per-op table below shows the GEMMs alone.`);
  }
  if (ortOk) {
    let line = `- faster than onnxruntime-node on the same threads (dense, batch ${r.ort.batch}): evit is ` +
      `${fmt(r.ort.evitOverOrt, 2)}× its throughput${forced ? ` with ${forced} kernels` : ''} (${r.ort.evitOverOrt > 1 ? 'met' : 'not met'})`;
    if (childOrt) {
      line += `, ${fmt(childOrt.evitOverOrt, 2)}× with OpenBLAS's own choice (${child.blasCore}) (${childOrt.evitOverOrt > 1 ? 'met' : 'not met'})`;
    }
    md.push(`${line} in this run.`);
  }
  if (reorg87.length) {
    const worst = Math.max(...reorg87.map((x) => x.share));
    const worstAll = Math.max(...reorg87.map((x) => x.shareWithScoreRow));
    md.push(`- reorganisation < ${TARGET_REORG * 100}% of the attention it follows (keep 0.7, batch 8, blocks ${DROP_LOC.join('/')}): ` +
      `top-k + gather + fusion at most ${fmt(100 * worst)}% (${worst < TARGET_REORG ? 'met' : 'not met'}); ` +
      `with the score row added, at most ${fmt(100 * worstAll)}% (${worstAll < TARGET_REORG ? 'met' : 'not met'}) in this run.`);
  }
  md.push('');

  if (r.profile?.skipped) {
    md.push('### Per-op profile');
    md.push('');
    md.push(`Skipped: ${r.profile.skipped}.`);
    md.push('');
  } else if (r.profile) {
    const db = prof8?.denseBlock ?? r.profile.batches.at(-1).denseBlock;
    const denseRun = r.evit.find((x) => x.batch === db.batch && x.config === 'dense');
    md.push(`### Where a dense block goes (batch ${db.batch}, ${db.tokens} tokens)`);
    md.push('');
    md.push(`From \`forward(input, { profile: true })\` on the dense schedule: each op timed inside the real forward pass`);
    md.push(`(a clock read after each op), median over ${db.rounds} profiled runs, for block 0.`);
    md.push('');
    md.push(table(['op', 'ms', 'share of block', 'GFLOP/s', ...pctHeads], [
      ...db.ops.map((x) => [x.op, fmt(x.ms, 3), `${fmt(100 * x.share)}%`, x.gflops ? fmt(x.gflops) : '—', ...(x.gflops ? pctCells(x) : noPct())]),
      ...db.extra.map((x) => [`${x.op} (whole pass, not in the block)`, fmt(x.ms, 3), '—', x.gflops ? fmt(x.gflops) : '—', ...(x.gflops ? pctCells(x) : noPct())]),
    ]));
    md.push('');
    md.push(`Block 0: ${fmt(db.blockMs, 2)} ms. All ${DIM.depth} blocks (medians per block, ${fmt(Math.min(...db.perBlockMs), 2)} to ` +
      `${fmt(Math.max(...db.perBlockMs), 2)} ms) plus patch embedding and head: ${fmt(db.profileTotalMs, 1)} ms of a ` +
      `${fmt(db.profiledWallMs, 1)} ms profiled pass (wall time, including the call through Node), against ` +
      `${fmt(denseRun?.medianMs, 1)} ms unprofiled in the throughput table above.`);
    md.push('ln1/ln2 are LayerNorm; qkv is the linear with bias; fc1 includes its GELU, proj and fc2 their residual add.');
    md.push('');

    md.push('### Reorganisation overhead');
    md.push('');
    md.push('From the same profiled runs. On a dropping block, `attention` also writes the class token\'s attention');
    md.push('row (the scores top-k ranks), and `reorganise` is top-k + gather + fusion. "share" is the median over runs');
    md.push('of reorganise / attention of that block. The score row\'s cost is attention on the dropping block minus');
    md.push('attention of the same block, at the same token count, in a run where that block is dense: for block');
    md.push(`${DROP_LOC[0]} the dense run; for block ${DROP_LOC.slice(1).map((L) => `${L} a schedule dropping only at ${DROP_LOC.filter((b) => b < L).join('/')}`).join(', for block ')}.`);
    md.push('That difference is within run-to-run noise when it is near zero or negative. "with score row" is');
    md.push('(reorganise + score row) / the dense attention. Target: < 5%.');
    md.push('');
    const rows = r.profile.batches.flatMap((b) => b.reorganisation);
    md.push(table(
      ['batch', 'keep', 'block', 'tokens in → kept', 'attention ms', 'dense attention ms', 'score row ms', 'reorganise ms', 'share', 'with score row'],
      rows.map((x) => [
        x.batch, x.keepRate, x.block, `${x.tokens} → ${x.kept}${x.tokensOut > x.kept ? ' + 1 fused' : ''}`, fmt(x.attentionMs, 3), fmt(x.denseAttentionMs, 3),
        fmt(x.scoreRowMs, 3), fmt(x.reorganiseMs, 3), `${fmt(100 * x.share)}%`, `${fmt(100 * x.shareWithScoreRow)}%`,
      ]),
    ));
    md.push('');
    md.push(`Profiled runs: ${r.profile.batches.map((b) => `${b.rounds} per configuration at batch ${b.batch}`).join(', ')}.`);
    md.push('');
  }

  if (ct?.set) {
    md.push(`### OpenBLAS kernels: OPENBLAS_CORETYPE=${ct.set} against OpenBLAS's own choice`);
    md.push('');
    md.push(`\`OPENBLAS_CORETYPE=${ct.set}\` is set in this machine's environment and forces OpenBLAS's kernel choice;`);
    md.push('the tables above ran under it. A user\'s machine without it gets OpenBLAS\'s own choice for its CPU.');
    md.push('OpenBLAS reads the variable once, when it loads, so here batch 8 is timed again in a child process');
    md.push('without it (a separate phase of the same run: compare the ratios within each table; across tables');
    md.push('machine noise adds a few percent).');
    md.push('');
    if (ct.without?.skipped) {
      md.push(`Skipped: ${ct.without.skipped}.`);
    } else if (child) {
      const same = r.evit.filter((x) => x.batch === 8);
      md.push(table(['schedule', `img/s (${m.blasCore}, forced)`, `img/s (${child.blasCore}, own choice)`, 'kernel speedup',
        `vs dense (${child.blasCore})`, 'GFLOP/s', ...pctHeads],
      child.rows.map((x) => {
        const base = same.find((y) => y.config === x.config);
        return [x.config, fmt(base?.imgPerSec, 2), fmt(x.imgPerSec, 2), `${fmt(x.imgPerSec / base?.imgPerSec, 2)}×`,
          `${fmt(x.speedupVsDense, 2)}×`, fmt(x.gflops), ...pctCells(pctOf(r.peak, x.gflops))];
      })));
      if (child.ort?.skipped) md.push('', `onnxruntime-node in the child phase: skipped (${child.ort.skipped}).`);
    }
    md.push('');
  }

  md.push('### Peer: onnxruntime-node, same dense model');
  md.push('');
  if (r.ort.skipped) {
    md.push(`Skipped: ${r.ort.skipped}.`);
  } else {
    const o = r.ort;
    md.push(`onnxruntime-node ${o.version} (CPU execution provider, intraOpNumThreads ${THREADS}, interOpNumThreads 1,`);
    md.push(`graphOptimizationLevel 'all'), running an ONNX export (opset 17, torch ${o.torch}, \`bench/export_onnx.py\`)`);
    md.push(`of the same safetensors file. Logits agree with evit's to ${o.maxAbsDiff.toExponential(2)} max abs ` +
      `(largest |logit| ${fmt(o.maxAbsLogit, 3)}). evit dense and onnxruntime-node alternate run by run, 50 ms apart so idle spinning threads of the other engine have stopped, at batch ${o.batch}`);
    md.push(`(${o.rounds} runs each${childOrt ? `; ${childOrt.rounds} in the child phase` : ''}). onnxruntime-node uses its own kernels, not OpenBLAS,`);
    md.push('so OPENBLAS_CORETYPE changes only the evit side.');
    md.push('');
    const phases = [{ label: forced ? kernelsLabel(m.blasCore, true) : kernelsLabel(m.blasCore, false), res: o }];
    if (childOrt) phases.push({ label: kernelsLabel(child.blasCore, false), res: childOrt });
    md.push(table(['engine', "evit's OpenBLAS kernels", 'median ms', 'img/s', 'GFLOP/s', ...pctHeads, 'evit / onnxruntime-node'],
      phases.flatMap((ph) => [
        ['evit dense', ph.label, fmt(ph.res.evit.medianMs, 1), fmt(ph.res.evit.imgPerSec, 2), fmt(ph.res.evit.gflops), ...pctCells(ph.res.evit),
          `${fmt(ph.res.evitOverOrt, 2)}×`],
        ['onnxruntime-node', '(same phase)', fmt(ph.res.ort.medianMs, 1), fmt(ph.res.ort.imgPerSec, 2), fmt(ph.res.ort.gflops), ...pctCells(ph.res.ort), ''],
      ])));
    md.push('');
    for (const ph of phases) {
      md.push(`- evit dense with ${ph.label}: ${fmt(ph.res.evitOverOrt, 2)}× onnxruntime-node's throughput ` +
        `(${ph.res.evitOverOrt > 1 ? 'faster' : 'slower'}; target: faster).`);
    }
    if (twoPct && Math.max(o.ort.pctPeakAvx2, childOrt?.ort.pctPeakAvx2 ?? 0) > 100) {
      md.push('- onnxruntime-node exceeds the AVX2 peak: its kernels use AVX-512 on this CPU.');
    }
  }
  md.push('');

  const resultsDir = path.join(__dirname, 'results');
  fs.mkdirSync(resultsDir, { recursive: true });
  const docs = QUICK ? path.join(resultsDir, 'quick.md') : path.join(ROOT, 'docs', 'BENCHMARKS.md');
  const json = path.join(resultsDir, QUICK ? 'quick.json' : 'forward.json');
  if (QUICK) fs.writeFileSync(docs, md.join('\n'));
  else writeSection('forward', md.join('\n'));
  if (!FROM_JSON) fs.writeFileSync(json, `${JSON.stringify(r, null, 2)}\n`);
  log(`wrote ${path.relative(ROOT, docs)} and ${path.relative(ROOT, json)}`);
}

// ---------------------------------------------------------------- main

async function main() {
  const started = nowMs();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'evit-bench-'));
  try {
    if (QUICK) log('quick run: few runs per number; writes bench/results/quick.md');
    const ckpt = path.join(dir, 'deit_small.safetensors');
    log('writing random DeiT-S weights…');
    makeCheckpoint(ckpt);
    const model = await evit.loadModel(ckpt, { arch: ARCH, threads: THREADS });
    const info = evit.backendInfo();
    const { testing } = loadBinding();
    if (!testing) throw new Error('the FMA peak needs the test build of the addon (binding.testing): run `npm run build`');
    const peak = measurePeak(testing.ops);
    const machine = machineInfo(info);
    const evitRows = await benchEvit(model, peak);
    let profile;
    try {
      profile = await profilePhase(model, peak);
    } catch (err) {
      profile = { skipped: `profiled runs failed: ${err.message.split('\n')[0]}` };
      log(`per-op profile skipped: ${profile.skipped}`);
    }
    let ortPrep;
    try {
      ortPrep = prepareOrt(ckpt, dir);
    } catch (err) {
      ortPrep = { skipped: `ONNX export failed: ${err.message.split('\n')[0]}` };
    }
    let ort;
    try {
      ort = await benchOrt(model, ortPrep, peak);
    } catch (err) {
      ort = { skipped: `onnxruntime-node run failed: ${err.message.split('\n')[0]}` };
    }
    if (ort.skipped) log(`onnxruntime-node peer skipped: ${ort.skipped}`);
    model.dispose();
    const coretype = { set: process.env.OPENBLAS_CORETYPE ?? null, without: benchWithoutCoretype(ckpt, ortPrep, peak) };
    const elapsed = (nowMs() - started) / 1000;
    writeReport({
      quick: QUICK, machine, model: { arch: ARCH, ...DIM, threads: THREADS }, peak, evit: evitRows, profile, ort, coretype, elapsedSeconds: elapsed,
    });
    log(`done in ${fmt(elapsed, 0)} s`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const FROM_JSON_MAIN = () => {
  writeReport(JSON.parse(fs.readFileSync(path.join(__dirname, 'results', 'forward.json'), 'utf8')));
  return Promise.resolve();
};
const entry = FROM_JSON ? FROM_JSON_MAIN : process.argv[2] === '--child' ? () => childMain(process.argv[3], process.argv[4], process.argv[5]) : main;
entry().catch((err) => {
  process.stderr.write(`${err.stack || err}\n`);
  process.exit(1);
});
