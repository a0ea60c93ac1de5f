#!/usr/bin/env node
'use strict';
/**
 * Attention and reorganisation microbenchmark (issue: the speed picture per block).
 *
 *   npm run bench:attn            (needs `npm run build` first)
 *   node bench/attn.js --quick    (tiny sizes, a few runs: a smoke test, not numbers to quote)
 *   node bench/attn.js --out DIR  (write the CSV, markdown and plots to DIR)
 *   --threads N                   CPU threads of evit's pool (default: one per core)
 *
 * For N in {50, 100, 197, 257, 401, 577} tokens (class token included), the widths and head
 * counts of DeiT-T/S/B, batch 1 and 64, on every backend backendInfo() reports available, one
 * transformer block is run through the real forward path: a one-block model with seeded random
 * weights (patch 4, one input channel, a grid of N − 1 patches, so patch embedding is negligible
 * and outside the block's time), with `profile: true`. Each pass reports the block's ops, so one
 * set of runs gives
 *   - plain dense attention (the dense schedule's attention op, no score output);
 *   - attention with the class-token score row (the same op on a dropping block);
 *   - top-k + gather + fusion (the `reorganise` op);
 *   - the whole block, dense against reorganised at keep rates 0.9 … 0.5 (fused).
 * The configurations of one case run round-robin (one warm-up each), and every number is a
 * median; ratios are between medians of the same run. Writes attn.csv, attn.md and the plots
 * attn-time.{svg,png} (time vs tokens) and attn-speedup.{svg,png} (block speedup vs keep rate)
 * under bench/results/, and the `attention` section of docs/BENCHMARKS.md.
 * --quick writes bench/results/quick.attn.* and leaves docs/BENCHMARKS.md alone.
 *
 * Budget (about 10 minutes on 2 CPU cores): batch 64 runs only where one dense block pass is at
 * most CPU_MAX_GFLOP_B64 GFLOP; the report lists what was left out.
 */
const fs = require('node:fs');
const path = require('node:path');
const { parseArgs } = require('node:util');
const c = require('./common');
const { writePlot, lineSpec } = require('./plot');
const { progress } = require('./progress');
const { writeSection } = require('./report');

const ROOT = path.resolve(__dirname, '..');
const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    out: { type: 'string' },
    threads: { type: 'string' },
    quiet: { type: 'boolean', default: false },
  },
});
const THREADS = args.threads === undefined ? undefined : Number(args.threads);
if (THREADS !== undefined && !(Number.isInteger(THREADS) && THREADS > 0)) throw new Error(`--threads must be a positive integer, got ${args.threads}`);
const QUICK = args.quick;
const OUT_DIR = path.resolve(args.out ?? path.join(__dirname, 'results'));
const PREFIX = QUICK ? 'quick.attn' : 'attn';
// The full run writes its section of docs/BENCHMARKS.md only when its files go to bench/results.
const WRITE_DOC = !QUICK && args.out === undefined;

const PLAN = QUICK
  ? { models: ['DeiT-T', 'DeiT-S'], tokens: [50, 100], batches: [1, 2], keepRates: [0.9, 0.7, 0.5] }
  : { models: ['DeiT-T', 'DeiT-S', 'DeiT-B'], tokens: [50, 100, 197, 257, 401, 577], batches: [1, 64], keepRates: [0.9, 0.8, 0.7, 0.6, 0.5] };
// Seconds of timed runs per configuration, and round limits, by batch.
const BUDGET = QUICK
  ? { default: { seconds: 0.02, minRounds: 2, maxRounds: 3 } }
  : { 1: { seconds: 0.6, minRounds: 9, maxRounds: 200 }, default: { seconds: 1.2, minRounds: 3, maxRounds: 40 } };
const CPU_MAX_GFLOP_B64 = 300;
// On a machine slower than planned, cases not started by then are left out (and listed as such).
const TIME_LIMIT_S = QUICK ? Infinity : 10 * 60;
const REPORT_KEEP = 0.7; // the keep rate whose attention and reorganisation the tables quote
const PATCH = 4;
const HEAD_DIM = 64;

/** FLOPs (2 per multiply-add) of one dense block pass over N tokens: qkv, q·kᵀ, attn·v, proj, MLP. */
const blockFlops = (B, N, C) => B * (2 * N * C * 3 * C + 4 * N * N * C + 2 * N * C * C + 2 * 2 * N * C * 4 * C);

/** The most square h×w with h·w = P. */
function gridFor(P) {
  let h = Math.floor(Math.sqrt(P));
  while (P % h) h--;
  return [h, P / h];
}

function budgetFor(batch) {
  return BUDGET[batch] ?? BUDGET.default;
}

/** The cases to run, and the ones left out with why. */
function planCases(backends) {
  const cases = [];
  const skipped = [];
  for (const backend of backends) {
    for (const model of PLAN.models) {
      for (const N of PLAN.tokens) {
        for (const batch of PLAN.batches) {
          const gflop = blockFlops(batch, N, c.DEIT[model].embed) / 1e9;
          if (backend === 'cpu' && batch > 1 && gflop > CPU_MAX_GFLOP_B64 && !QUICK) {
            skipped.push({ backend, model, N, batch, gflop });
            continue;
          }
          cases.push({ backend, model, N, batch, gflop });
        }
      }
    }
  }
  // Cheapest first, so that a run cut short by the time limit loses only the heaviest cases.
  cases.sort((a, b) => a.batch - b.batch || a.gflop - b.gflop);
  return { cases, skipped };
}

/** A one-block native model of `model`'s width over N − 1 patches, on `backend`; or { skipped }. */
function buildBlock(binding, backend, model, N, weights) {
  const { embed: C, heads } = c.DEIT[model];
  const [gridH, gridW] = gridFor(N - 1);
  const dims = { embed: C, depth: 1, patch: PATCH, inChans: 1, gridH, gridW, mlp: 4 * C, classes: 10 };
  // Weights depend on the width only, except the position embedding (one row per token).
  if (!weights.has(model)) weights.set(model, c.randomTensors({ ...dims, gridH: 1, gridW: 1 }));
  const record = {};
  for (const [name, t] of weights.get(model)) record[name] = t.data;
  record.pos_embed = c.normalFill(c.mulberry32(N), N * C, 0.02);
  const config = { embedDim: C, depth: 1, numHeads: heads, patchSize: PATCH, inChans: 1, gridH, gridW, numClasses: 10, mlpHidden: 4 * C, eps: 1e-6 };
  const native = new binding.Model(config, record, { device: backend, threads: THREADS });
  if (native.backend !== backend) {
    native.dispose();
    return { skipped: `the native Model gave a ${native.backend} model when asked for ${backend}` };
  }
  return { native, dims };
}

class NoProfile extends Error {}

/** Times dense and every keep rate of one case round-robin; returns one row per configuration. */
async function runCase(binding, cs, weights) {
  const slots = binding.backendInfo().profileSlots;
  const built = buildBlock(binding, cs.backend, cs.model, cs.N, weights);
  if (built.skipped) return { skipped: built.skipped };
  const { native, dims } = built;
  const P = cs.N - 1;
  const img = c.randomImages(cs.batch, 1, dims.gridH * PATCH, dims.gridW * PATCH, cs.N);
  const configs = [{ name: 'dense', keepRate: 1, keep: -1 }].concat(
    PLAN.keepRates.map((r) => ({ name: `keep ${r}`, keepRate: r, keep: Math.ceil(r * P) })),
  );
  for (const cfg of configs) {
    cfg.samples = [];
    cfg.run = async () => {
      const cpu0 = process.cpuUsage();
      const t0 = c.nowMs();
      const res = await native.forward(img.data, cs.batch, Int32Array.of(cfg.keep), Uint8Array.of(cfg.keep < 0 ? 0 : 1), true);
      const wall = c.nowMs() - t0;
      const used = process.cpuUsage(cpu0);
      if (!res.profile) throw new NoProfile(`the ${cs.backend} backend returned no per-op profile`);
      // A one-block profile: the model slots, then the block's.
      const slot = (name) => res.profile[slots.model.length + slots.block.indexOf(name)];
      return {
        wall,
        cpu: (used.user + used.system) / 1000,
        block: slots.block.reduce((a, s) => a + slot(s), 0),
        attention: slot('attention'),
        reorganise: slot('reorganise'),
        mlp: slot('ln2') + slot('fc1') + slot('fc2'),
        kept: res.kept[0]?.perImage ?? P,
      };
    };
  }
  try {
    let perRound = 0;
    try {
      for (const cfg of configs) perRound += (await cfg.run()).wall; // warm-up
    } catch (err) {
      if (err instanceof NoProfile) return { skipped: err.message };
      throw err;
    }
    const budget = budgetFor(cs.batch);
    const rounds = Math.max(budget.minRounds, Math.min(budget.maxRounds, Math.ceil((budget.seconds * 1000 * configs.length) / perRound)));
    for (let r = 0; r < rounds; r++) for (const cfg of configs) cfg.samples.push(await cfg.run());
    const med = (cfg, f) => c.median(cfg.samples.map(f));
    const dense = configs[0];
    const denseBlock = med(dense, (s) => s.block);
    const denseAttention = med(dense, (s) => s.attention);
    const denseCpu = med(dense, (s) => s.cpu);
    return {
      rounds,
      rows: configs.map((cfg) => {
        const blockMs = med(cfg, (s) => s.block);
        const attentionMs = med(cfg, (s) => s.attention);
        const reorganiseMs = cfg.keep < 0 ? null : med(cfg, (s) => s.reorganise);
        return {
          backend: cs.backend,
          model: cs.model,
          embed_dim: dims.embed,
          heads: c.DEIT[cs.model].heads,
          tokens: cs.N,
          batch: cs.batch,
          config: cfg.name,
          keep_rate: cfg.keepRate,
          tokens_out: cfg.keep < 0 ? cs.N : 1 + cfg.samples[0].kept,
          runs: cfg.samples.length,
          block_ms: blockMs,
          attention_ms: attentionMs,
          score_row_ms: cfg.keep < 0 ? null : attentionMs - denseAttention,
          reorganise_ms: reorganiseMs,
          reorganise_share: cfg.keep < 0 ? null : med(cfg, (s) => s.reorganise / s.attention),
          mlp_ms: med(cfg, (s) => s.mlp),
          wall_ms: med(cfg, (s) => s.wall),
          cpu_ms: med(cfg, (s) => s.cpu),
          block_speedup: denseBlock / blockMs,
          cpu_speedup: denseCpu / med(cfg, (s) => s.cpu),
          block_gflops: cfg.keep < 0 ? (cs.gflop * 1e9) / (blockMs / 1000) / 1e9 : null,
        };
      }),
    };
  } finally {
    native.dispose();
  }
}

const CSV_COLUMNS = [
  'backend', 'model', 'embed_dim', 'heads', 'tokens', 'batch', 'config', 'keep_rate', 'tokens_out', 'runs', 'block_ms', 'attention_ms',
  'score_row_ms', 'reorganise_ms', 'reorganise_share', 'mlp_ms', 'wall_ms', 'cpu_ms', 'block_speedup', 'cpu_speedup', 'block_gflops',
];

// ---------------------------------------------------------------- report

const facetLabel = (r, backends) => `${backends.length > 1 ? `${r.backend}, ` : ''}batch ${r.batch}`;

async function writePlots(rows, backends) {
  const pick = (r, config) => rows.find((x) => x.backend === r.backend && x.model === r.model && x.tokens === r.tokens && x.batch === r.batch && x.config === config);
  const time = [];
  for (const d of rows.filter((r) => r.config === 'dense')) {
    const k = pick(d, `keep ${REPORT_KEEP}`);
    const base = { model: d.model, tokens: d.tokens, facet: facetLabel(d, backends) };
    time.push({ ...base, measure: 'attention', ms: d.attention_ms });
    if (k) {
      time.push({ ...base, measure: 'attention + score row', ms: k.attention_ms });
      time.push({ ...base, measure: 'top-k + gather + fusion', ms: k.reorganise_ms });
    }
    time.push({ ...base, measure: 'block, dense', ms: d.block_ms });
    if (k) time.push({ ...base, measure: `block, keep ${REPORT_KEEP}`, ms: k.block_ms });
  }
  const speed = rows.filter((r) => r.config !== 'dense').map((r) => ({
    model: r.model, facet: facetLabel(r, backends), keep_rate: r.keep_rate, tokens: `N = ${r.tokens}`, speedup: r.block_speedup,
  }));
  const base = path.join(OUT_DIR, PREFIX);
  const timePlot = await writePlot(lineSpec({
    rows: time, x: 'tokens', y: 'ms', color: 'measure', column: 'model', row: 'facet', logX: true, logY: true,
    title: 'One transformer block: time per pass against tokens (median)', xTitle: 'tokens N (class token included)', yTitle: 'ms (log)',
  }), `${base}-time`);
  const speedPlot = await writePlot(lineSpec({
    rows: speed, x: 'keep_rate', y: 'speedup', color: 'tokens', column: 'model', row: 'facet',
    title: 'Whole block: dense time / reorganised time, against keep rate (fused)', xTitle: 'keep rate', yTitle: 'speedup over dense',
  }), `${base}-speedup`);
  return { timePlot, speedPlot };
}

function markdown(r, plots) {
  const { fmt, table } = c;
  const md = [];
  const rel = (f) => path.relative(path.join(ROOT, 'docs'), f).split(path.sep).join('/');
  md.push('## Attention, reorganisation and one block, by token count');
  md.push('');
  if (QUICK) {
    md.push('**Quick run** (`node bench/attn.js --quick`): tiny sizes and a few runs, to check that the benchmark runs end to end.');
    md.push('');
  }
  md.push(`Generated by \`${QUICK ? 'node bench/attn.js --quick' : 'npm run bench:attn'}\` (\`bench/attn.js\`); do not edit by hand. Every row of`);
  md.push(`\`${path.relative(ROOT, r.files.csv)}\` is one configuration; plots: \`${path.relative(ROOT, plots.timePlot.png)}\`, \`${path.relative(ROOT, plots.speedPlot.png)}\` (and .svg).`);
  md.push('');
  md.push(table(['', ''], c.machineRows(r.machine)));
  md.push('');
  md.push('This is a shared 2-core virtual machine, where other processes may run: single times move by');
  md.push('several percent between runs; ratios between configurations of one case, timed round-robin, are the stable part.');
  md.push('');
  md.push('**Method.** Each case is one transformer block of the given width run through the real forward path: a');
  md.push('one-block model with seeded random weights whose patch grid has N − 1 patches (patch 4, one input channel, so the');
  md.push('patch embedding is negligible and outside the block), called with `profile: true`, which times every op inside');
  md.push('the pass. Dense attention is the attention op of the dense schedule; "with score row" is the same op on a');
  md.push('dropping block, which also writes the head-mean class-token row; "top-k + gather + fusion" is the block\'s');
  md.push('reorganise op; "block" is the sum of the block\'s ops (LayerNorms, qkv, attention, proj, reorganisation, MLP).');
  md.push(`The dense schedule and keep rates ${PLAN.keepRates.join(', ')} (fused) alternate run by run after one warm-up each;`);
  md.push('every figure is a median, every ratio is between medians of the same case.');
  md.push('');
  if (r.skipped.length) {
    const why = (s) => s.why ?? `one dense block pass over ${CPU_MAX_GFLOP_B64} GFLOP on the CPU`;
    const by = new Map();
    for (const s of r.skipped) {
      const k = `${why(s)}\u0000${s.backend} ${s.model} batch ${s.batch}`;
      by.set(k, [...(by.get(k) ?? []), s.N]);
    }
    const reasons = new Map();
    for (const [k, ns] of by) {
      const [reason, what] = k.split('\u0000');
      reasons.set(reason, [...(reasons.get(reason) ?? []), `${what} at N = ${ns.sort((a, b) => a - b).join(', ')}`]);
    }
    md.push(`**Reduced to fit the time budget:** ${[...reasons].map(([reason, list]) => `${list.join('; ')} not run (${reason})`).join('; ')}.`);
    md.push(`Timed runs per configuration: ${r.roundsSummary}.`);
  } else {
    md.push(`Timed runs per configuration: ${r.roundsSummary}.`);
  }
  md.push('');
  for (const backend of r.backends) {
    for (const batch of PLAN.batches) {
      const dense = r.rows.filter((x) => x.backend === backend && x.batch === batch && x.config === 'dense');
      if (!dense.length) continue;
      const at = (d, name) => r.rows.find((x) => x.backend === backend && x.batch === batch && x.model === d.model && x.tokens === d.tokens && x.config === name);
      md.push(`### ${backend.toUpperCase()}, batch ${batch}`);
      md.push('');
      const lo = PLAN.keepRates[PLAN.keepRates.length - 1];
      md.push(table(
        ['model', 'N', 'attention ms', `with score row ms`, 'score row', `top-k + gather + fusion ms`, 'of attention',
          'block dense ms', 'GFLOP/s', `block keep ${REPORT_KEEP} ms`, `speedup ${REPORT_KEEP}`, `speedup ${lo}`,
          `speedup ${REPORT_KEEP}, CPU time`],
        dense.map((d) => {
          const k = at(d, `keep ${REPORT_KEEP}`);
          const l = at(d, `keep ${lo}`);
          return [d.model, d.tokens, fmt(d.attention_ms, 3), fmt(k?.attention_ms, 3), `${fmt(100 * (k?.score_row_ms / d.attention_ms))}%`,
            fmt(k?.reorganise_ms, 3), `${fmt(100 * k?.reorganise_share)}%`, fmt(d.block_ms, 3), fmt(d.block_gflops),
            fmt(k?.block_ms, 3), `${fmt(k?.block_speedup, 2)}×`, `${fmt(l?.block_speedup, 2)}×`, `${fmt(k?.cpu_speedup, 2)}×`];
        }),
      ));
      md.push('');
    }
  }
  const rates = r.rows.filter((x) => x.block_gflops > 0).map((x) => x.block_gflops);
  if (rates.length && Math.max(...rates) > 3 * Math.min(...rates)) {
    md.push(`**Interference:** the dense block's GFLOP/s ranges from ${fmt(Math.min(...rates))} to ${fmt(Math.max(...rates))} across cases, far more than`);
    md.push('the shapes explain: other processes held the cores during part of this run. Times from the slow cases are inflated;');
    md.push('ratios within a case, whose configurations alternated run by run, are still comparable but noisier.');
    md.push('');
  }
  md.push(`"score row" is (attention with score row − dense attention) / dense attention, at the same N; within noise near zero.`);
  md.push(`"of attention" is the median of reorganise / attention over the keep-${REPORT_KEEP} runs (SPEC §5 target: < 5%).`);
  md.push('Speedups at every keep rate are in the CSV and the speedup plot. "CPU time" is the process CPU time of the');
  md.push('whole pass (patch embedding and head included, both negligible here), dense over keep: time other processes');
  md.push(`held the core does not count, so on a shared machine it is the steadier ratio${r.machine.threads === 1 ? '' : ' (with several evit threads it also counts their idle spinning)'}.`);
  md.push('');
  md.push(`![time against tokens](${rel(plots.timePlot.png)})`);
  md.push('');
  md.push(`![speedup against keep rate](${rel(plots.speedPlot.png)})`);
  md.push('');
  return md.join('\n');
}

// ---------------------------------------------------------------- main

async function main() {
  const started = c.nowMs();
  const evit = require('../dist');
  const { loadBinding } = require('../dist/native');
  const binding = loadBinding();
  const info = evit.backendInfo();
  const backends = c.availableBackends(info);
  const { cases, skipped } = planCases(backends);
  const bar = progress(cases.length, { title: 'bench:attn', quiet: args.quiet });
  if (skipped.length) bar.note(`reduced: ${skipped.length} case(s) at batch 64 left out (dense block over ${CPU_MAX_GFLOP_B64} GFLOP per pass on the CPU)`);
  const rows = [];
  const weights = new Map();
  const rounds = new Map();
  for (const cs of cases) {
    const label = `${cs.backend} ${cs.model} N=${cs.N} batch ${cs.batch}`;
    if ((c.nowMs() - started) / 1000 > TIME_LIMIT_S) {
      skipped.push({ ...cs, why: `the ${TIME_LIMIT_S / 60}-minute time limit was reached first` });
      bar.step(`${label}: left out (time limit)`);
      continue;
    }
    const res = await runCase(binding, cs, weights);
    if (res.skipped) {
      skipped.push({ ...cs, why: res.skipped });
      bar.note(`${label}: skipped (${res.skipped})`);
    } else {
      rows.push(...res.rows);
      const key = `batch ${cs.batch}`;
      rounds.set(key, [...(rounds.get(key) ?? []), res.rounds]);
    }
    bar.step(label);
  }
  bar.stop();
  // Back to reading order: backend, model, tokens, batch (configurations stay in run order).
  const rank = (r) => [c.availableBackends(info).indexOf(r.backend), PLAN.models.indexOf(r.model), r.tokens, r.batch];
  rows.sort((a, b) => {
    const x = rank(a);
    const y = rank(b);
    const i = x.findIndex((v, j) => v !== y[j]);
    return i < 0 ? 0 : x[i] - y[i];
  });
  fs.mkdirSync(OUT_DIR, { recursive: true });
  const files = { csv: path.join(OUT_DIR, `${PREFIX}.csv`), md: path.join(OUT_DIR, `${PREFIX}.md`) };
  fs.writeFileSync(files.csv, c.toCsv(CSV_COLUMNS, rows));
  const plots = await writePlots(rows, backends);
  const roundsSummary = [...rounds].map(([k, v]) => `${Math.min(...v)}–${Math.max(...v)} at ${k}`).join(', ');
  // The CPU pool is sized by the first model: describe the machine as it ran.
  const report = { machine: c.machineInfo(evit.backendInfo()), backends, rows, skipped, files, roundsSummary };
  const md = markdown(report, plots);
  fs.writeFileSync(files.md, md);
  if (WRITE_DOC) writeSection('attention', md);
  process.stderr.write(`[bench:attn] wrote ${[files.csv, files.md, plots.timePlot.svg, plots.timePlot.png, plots.speedPlot.svg, plots.speedPlot.png]
    .map((f) => path.relative(process.cwd(), f)).join(', ')}${WRITE_DOC ? ' and docs/BENCHMARKS.md' : ''} in ${c.fmt((c.nowMs() - started) / 1000, 0)} s\n`);
}

main().catch((err) => {
  process.stderr.write(`${err.stack || err}\n`);
  process.exit(1);
});
