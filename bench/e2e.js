#!/usr/bin/env node
'use strict';
/**
 * End-to-end throughput and latency against keep rate, with onnxruntime-node as the peer.
 *
 *   npm run bench:e2e             (needs `npm run build` first)
 *   node bench/e2e.js --quick     (DeiT-T only, a few runs: a smoke test, not numbers to quote)
 *   node bench/e2e.js --out DIR   (write the CSV, markdown and plots to DIR)
 *   --threads N                   CPU threads of evit's pool and of onnxruntime-node (default: one per core)
 *   --accuracy FILE               accuracy table to plot (default bench/results/accuracy.json, from `npm run eval`)
 *   --from-json                   rewrite the report from the last run's e2e.json without measuring
 *
 * For DeiT-T/S/B shapes (224 px, 12 blocks, seeded random weights) and keep rates 1.0 … 0.5
 * (fused, blocks 3/6/9), on every backend backendInfo() reports available: latency at batch 1
 * (median and 90th percentile) and throughput at a larger batch, all keep rates of one model
 * alternating run by run. When onnxruntime-node is installed and Debian's python3 has torch,
 * bench/export_onnx.py exports the same checkpoint and onnxruntime-node runs it dense on the same
 * number of threads, in the same round-robin. Writes e2e.csv, e2e.json, e2e.md, e2e-throughput.{svg,png},
 * e2e-latency.{svg,png} and, when the accuracy table exists, e2e-accuracy.{svg,png} under
 * bench/results/, and the `e2e` section of docs/BENCHMARKS.md. --quick writes
 * bench/results/quick.e2e.* and leaves docs/BENCHMARKS.md alone.
 */
const fs = require('node:fs');
const os = require('node:os');
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
    accuracy: { type: 'string' },
    threads: { type: 'string' },
    'from-json': { type: 'boolean', default: false },
    quiet: { type: 'boolean', default: false },
  },
});
const QUICK = args.quick;
const THREADS = args.threads === undefined ? undefined : Number(args.threads);
if (THREADS !== undefined && !(Number.isInteger(THREADS) && THREADS > 0)) throw new Error(`--threads must be a positive integer, got ${args.threads}`);
const OUT_DIR = path.resolve(args.out ?? path.join(__dirname, 'results'));
const PREFIX = QUICK ? 'quick.e2e' : 'e2e';
const WRITE_DOC = !QUICK && args.out === undefined;
const ACCURACY = path.resolve(args.accuracy ?? path.join(__dirname, 'results', 'accuracy.json'));

const DROP_LOC = [3, 6, 9];
const PLAN = QUICK
  ? { models: ['DeiT-T'], keepRates: [1, 0.7, 0.5], latencyBatch: 1, throughputBatch: { cpu: 2, cuda: 8 } }
  : { models: ['DeiT-T', 'DeiT-S', 'DeiT-B'], keepRates: [1, 0.9, 0.8, 0.7, 0.6, 0.5], latencyBatch: 1, throughputBatch: { cpu: 8, cuda: 64 } };
// Timed seconds per configuration and round limits, for the latency and the throughput batch.
const BUDGET = QUICK
  ? { latency: { seconds: 0.05, minRounds: 2, maxRounds: 3 }, throughput: { seconds: 0.05, minRounds: 2, maxRounds: 2 } }
  : { latency: { seconds: 3, minRounds: 9, maxRounds: 100, warmups: 1 }, throughput: { seconds: 5, minRounds: 3, maxRounds: 40, warmups: 1 } };
// On a machine slower than planned, models not started by then are left out (and listed as such).
const TIME_LIMIT_S = QUICK ? Infinity : 10 * 60;
const DIM = { depth: 12, patch: 16, img: 224, inChans: 3, classes: 1000 };

/** Analytic FLOPs (2 per multiply-add) of one image through a schedule's token counts. */
function scheduleFlops(C, tokenCounts) {
  const P = (DIM.img / DIM.patch) ** 2;
  let total = 2 * P * C * DIM.inChans * DIM.patch ** 2 + 2 * C * DIM.classes;
  let n = P;
  for (let i = 0; i < DIM.depth; i++) {
    const N = 1 + n;
    const out = 1 + tokenCounts[i];
    total += 2 * N * C * 3 * C + 4 * N * N * C + 2 * N * C * C + 4 * out * C * 4 * C;
    n = tokenCounts[i];
  }
  return total;
}

/** Exports `ckpt` to ONNX and opens an onnxruntime-node session, or says why not. */
async function prepareOrt(ckpt, dir, heads, threads, note) {
  const probe = c.requireOrt();
  if (probe.skipped) return probe;
  const onnxFile = path.join(dir, `${path.basename(ckpt, '.safetensors')}.onnx`);
  note(`exporting ${path.basename(onnxFile)} with /usr/bin/python3 (torch)…`);
  const exp = c.exportOnnx(ckpt, onnxFile, heads);
  if (typeof exp === 'string') return { skipped: exp };
  const s = await c.ortSession(onnxFile, threads);
  if (s.skipped) return s;
  return { ...s, torch: exp.torch };
}

async function benchModel(evit, backend, name, dir, bar) {
  const { arch, embed: C, heads } = c.DEIT[name];
  const grid = DIM.img / DIM.patch;
  const ckpt = path.join(dir, `${arch}.safetensors`);
  c.writeRandomCheckpoint(ckpt, { embed: C, depth: DIM.depth, patch: DIM.patch, inChans: DIM.inChans, gridH: grid, gridW: grid, mlp: 4 * C, classes: DIM.classes });
  const model = await evit.loadModel(ckpt, { arch, device: backend, dropLoc: DROP_LOC, fuse: true, threads: THREADS });
  // The peer gets as many threads as evit's pool runs (sized by the first model).
  const threads = evit.backendInfo().cpu.threads;
  const ort = backend === 'cpu' ? await prepareOrt(ckpt, dir, heads, threads, bar.note) : { skipped: 'onnxruntime-node runs on the CPU only here' };
  fs.rmSync(ckpt, { force: true });
  const rows = [];
  const peer = { model: name, backend };
  try {
    for (const [kind, batch] of [['latency', PLAN.latencyBatch], ['throughput', PLAN.throughputBatch[backend] ?? 8]]) {
      const input = c.randomImages(batch, DIM.inChans, DIM.img, DIM.img);
      const settleMs = ort.skipped ? 0 : 50;
      const entries = PLAN.keepRates.map((keepRate) => {
        const schedule = model.scheduleFor({ keepRate });
        const entry = { keepRate, schedule, settleMs, cpu: [] };
        entry.run = async () => {
          const cpu0 = process.cpuUsage();
          await model.forward(input, { keepRate });
          const used = process.cpuUsage(cpu0);
          entry.cpu.push((used.user + used.system) / 1000);
        };
        return entry;
      });
      if (!ort.skipped) {
        const feeds = { input: new ort.ort.Tensor('float32', input.data, input.shape) };
        entries.push({ engine: 'onnxruntime-node', settleMs, run: () => ort.session.run(feeds) });
        if (kind === 'throughput') {
          // The peer must compute the same function: compare its logits with evit's dense ones.
          const theirs = (await ort.session.run(feeds)).logits.data;
          const ours = (await model.forward(input, { keepRate: 1 })).logits;
          peer.maxAbsDiff = Math.max(...ours.map((v, i) => Math.abs(v - theirs[i])));
          peer.maxAbsLogit = Math.max(...ours.map(Math.abs));
        }
      }
      const rounds = await c.timeRoundRobin(entries, BUDGET[kind]);
      const dense = c.median(entries[0].times);
      // CPU time of the timed runs only (the warm-up runs come first).
      const cpuMs = (e) => (e.cpu ? c.median(e.cpu.slice(-e.times.length)) : null);
      const denseCpu = cpuMs(entries[0]);
      const ortEntry = entries.find((e) => e.engine);
      for (const e of entries) {
        const ms = c.median(e.times);
        const tokenCounts = e.schedule?.tokenCounts ?? entries[0].schedule.tokenCounts;
        rows.push({
          backend,
          model: name,
          engine: e.engine ?? 'evit',
          measure: kind,
          batch,
          keep_rate: e.keepRate ?? 1,
          tokens_after: DROP_LOC.map((b) => tokenCounts[b]).join('/'),
          runs: e.times.length,
          median_ms: ms,
          p90_ms: c.quantile(e.times, 0.9),
          img_per_s: (batch * 1000) / ms,
          speedup_vs_dense: dense / ms,
          cpu_ms: cpuMs(e),
          cpu_speedup_vs_dense: e.cpu ? denseCpu / cpuMs(e) : null,
          flop_ratio: scheduleFlops(C, entries[0].schedule.tokenCounts) / scheduleFlops(C, tokenCounts),
          vs_onnxruntime: ortEntry ? c.median(ortEntry.times) / ms : null,
        });
      }
      bar.step(`${backend} ${name} ${kind} (batch ${batch}, ${rounds} rounds)`);
    }
  } finally {
    model.dispose();
    if (!ort.skipped && typeof ort.session.release === 'function') await ort.session.release();
  }
  if (ort.skipped) peer.skipped = ort.skipped;
  else Object.assign(peer, { version: ort.version, torch: ort.torch });
  return { rows, peer };
}

const CSV_COLUMNS = ['backend', 'model', 'engine', 'measure', 'batch', 'keep_rate', 'tokens_after', 'runs', 'median_ms', 'p90_ms',
  'img_per_s', 'speedup_vs_dense', 'cpu_ms', 'cpu_speedup_vs_dense', 'flop_ratio', 'vs_onnxruntime'];

// ---------------------------------------------------------------- accuracy

/** The accuracy table of `npm run eval`, checked; { missing } when absent or malformed. */
function readAccuracy(file) {
  if (!fs.existsSync(file)) return { missing: `${path.relative(ROOT, file)} does not exist` };
  let a;
  try {
    a = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    return { missing: `${path.relative(ROOT, file)} is not valid JSON (${err.message})` };
  }
  const ok = a && Array.isArray(a.rows) && a.rows.length > 0 && a.rows.every((r) =>
    Number.isFinite(r.keepRate) && typeof r.fuse === 'boolean' && Number.isFinite(r.top1) && r.top1 >= 0 && r.top1 <= 1 && Number.isFinite(r.imgPerSec));
  if (!ok) return { missing: `${path.relative(ROOT, file)} is not shaped {model, machine, rows: [{keepRate, fuse, top1, imgPerSec}]}` };
  return a;
}

async function accuracyPlot(acc, base) {
  const all = [...acc.rows];
  // The dense pass (keep 1) belongs to both curves: it starts the fused and the unfused one alike.
  const dense = acc.rows.find((r) => r.keepRate === 1);
  if (dense) for (const fuse of new Set(acc.rows.map((r) => r.fuse))) if (!all.some((r) => r.keepRate === 1 && r.fuse === fuse)) all.push({ ...dense, fuse });
  const rows = all.map((r) => ({ ...r, top1pct: 100 * r.top1, schedule: r.fuse ? 'fused' : 'not fused', label: String(r.keepRate) }));
  const order = [...new Set(rows.map((r) => r.schedule))];
  const chart = (x, xTitle) => ({
    width: 300,
    height: 220,
    encoding: {
      x: { field: x, type: 'quantitative', title: xTitle, scale: { zero: false } },
      y: { field: 'top1pct', type: 'quantitative', title: 'top-1 accuracy (%)', scale: { zero: false } },
      color: { field: 'schedule', type: 'nominal', title: null, sort: order },
    },
    layer: [
      { mark: { type: 'line', point: true } },
      { mark: { type: 'text', dy: -9, fontSize: 10 }, encoding: { text: { field: 'label' } } },
    ],
  });
  const spec = {
    title: `${acc.model}: accuracy against speed (points labelled with the keep rate)`,
    data: { values: rows },
    hconcat: [chart('imgPerSec', 'images/s'), chart('keepRate', 'keep rate')],
  };
  return writePlot(spec, base);
}

// ---------------------------------------------------------------- report

async function writePlots(rows) {
  const base = path.join(OUT_DIR, PREFIX);
  const series = (r) => (r.engine === 'evit' ? `evit ${r.backend}` : `${r.engine} (dense)`);
  const pick = (measure, y) => rows.filter((r) => r.measure === measure).map((r) => ({ model: r.model, keep_rate: r.keep_rate, engine: series(r), [y]: r[y === 'ms' ? 'median_ms' : 'img_per_s'] }));
  const thr = rows.find((r) => r.measure === 'throughput');
  const throughput = await writePlot(lineSpec({
    rows: pick('throughput', 'img/s'), x: 'keep_rate', y: 'img/s', color: 'engine', column: 'model',
    title: `Throughput against keep rate (batch ${thr?.batch}, median)`, xTitle: 'keep rate (1 = dense)', yTitle: 'images/s',
  }), `${base}-throughput`);
  const latency = await writePlot(lineSpec({
    rows: pick('latency', 'ms'), x: 'keep_rate', y: 'ms', color: 'engine', column: 'model',
    title: `Latency against keep rate (batch ${PLAN.latencyBatch}, median)`, xTitle: 'keep rate (1 = dense)', yTitle: 'ms per batch',
  }), `${base}-latency`);
  return { throughput, latency };
}

function markdown(r) {
  const { fmt, table } = c;
  const rel = (f) => path.relative(path.join(ROOT, 'docs'), f).split(path.sep).join('/');
  const md = [];
  md.push('## End to end: speed against keep rate, and the accuracy it costs');
  md.push('');
  if (QUICK) {
    md.push('**Quick run** (`node bench/e2e.js --quick`): DeiT-T only and a few runs, to check that the benchmark runs end to end.');
    md.push('');
  }
  md.push(`Generated by \`${QUICK ? 'node bench/e2e.js --quick' : 'npm run bench:e2e'}\` (\`bench/e2e.js\`); do not edit by hand. Raw numbers:`);
  md.push(`\`${path.relative(ROOT, r.files.csv)}\`; plots: ${Object.values(r.plots).map((p) => `\`${path.relative(ROOT, p.png)}\``).join(', ')} (and .svg).`);
  md.push('');
  md.push(table(['', ''], c.machineRows(r.machine)));
  md.push('');
  md.push('This is a shared 2-core virtual machine, where other processes may run: single times move by');
  md.push('several percent between runs; ratios within one model\'s round-robin are the stable part.');
  md.push('');
  md.push(`**Method.** DeiT-T/S/B shapes at ${DIM.img} px (${(DIM.img / DIM.patch) ** 2} patches, 12 blocks, ${DIM.classes} classes) with seeded random`);
  md.push(`weights; EViT drops at blocks ${DROP_LOC.join('/')} with fusion. For each model all keep rates (and onnxruntime-node, when present)`);
  md.push('alternate run by run after a warm-up run each; latency is the time of one batch-1 pass (median and 90th');
  md.push('percentile), throughput is images/s from the median time of a larger batch. "FLOP ratio" is the analytic FLOPs of dense');
  md.push(`over the schedule's. "speedup, CPU time" compares the process CPU time of a batch instead of its wall time: time`);
  md.push('other processes held the cores does not count, so on a shared machine it is the steadier ratio' +
    `${r.machine.threads === 1 ? '' : ' (with several evit threads it also counts their idle spinning)'}.`);
  md.push(`Timed runs per configuration: ${r.roundsSummary}.`);
  if (r.leftOut?.length) md.push(`**Reduced:** ${r.leftOut.join(', ')} not run: the ${r.timeLimitS / 60}-minute time limit was reached first.`);
  md.push('');
  for (const backend of r.backends) {
    const lat = r.rows.filter((x) => x.backend === backend && x.measure === 'latency' && x.engine === 'evit');
    const thr = r.rows.filter((x) => x.backend === backend && x.measure === 'throughput');
    if (!lat.length) continue;
    const tb = thr[0]?.batch;
    md.push(`### ${backend.toUpperCase()}`);
    md.push('');
    md.push(table(
      ['model', 'keep rate', 'tokens after 3/6/9', 'latency p50 ms', 'latency p90 ms', `img/s (batch ${tb})`, 'speedup vs dense',
        'speedup, CPU time', 'FLOP ratio', 'vs onnxruntime-node'],
      lat.map((l) => {
        const t = thr.find((x) => x.model === l.model && x.keep_rate === l.keep_rate && x.engine === 'evit');
        return [l.model, l.keep_rate, l.tokens_after, fmt(l.median_ms, 1), fmt(l.p90_ms, 1), fmt(t?.img_per_s, 2),
          `${fmt(t?.speedup_vs_dense, 2)}×`, `${fmt(t?.cpu_speedup_vs_dense, 2)}×`, `${fmt(t?.flop_ratio, 2)}×`, t?.vs_onnxruntime == null ? '—' : `${fmt(t.vs_onnxruntime, 2)}×`];
      }),
    ));
    md.push('');
  }
  md.push('### Peer: onnxruntime-node, same dense model, same threads');
  md.push('');
  const peers = r.peers.filter((p) => p.backend === 'cpu');
  const ran = peers.filter((p) => !p.skipped);
  if (ran.length) {
    md.push(`onnxruntime-node ${ran[0].version} (CPU execution provider, intraOpNumThreads ${r.machine.threads}, interOpNumThreads 1, graphOptimizationLevel 'all')`);
    md.push(`runs an ONNX export (\`bench/export_onnx.py\`, torch ${ran[0].torch}) of the same checkpoint; it alternates with evit run by run,`);
    md.push('50 ms apart so that the other engine\'s spinning threads have stopped.');
    md.push('');
    const o = r.rows.filter((x) => x.engine === 'onnxruntime-node');
    md.push(table(['model', 'measure', 'batch', 'median ms', 'img/s', 'evit dense / onnxruntime-node', 'evit keep 0.7 / onnxruntime-node', 'logits max abs diff'],
      o.map((x) => {
        const ev = (k) => r.rows.find((y) => y.model === x.model && y.measure === x.measure && y.engine === 'evit' && y.backend === 'cpu' && y.keep_rate === k);
        const p = peers.find((q) => q.model === x.model);
        return [x.model, x.measure, x.batch, fmt(x.median_ms, 1), fmt(x.img_per_s, 2), `${fmt(ev(1)?.vs_onnxruntime, 2)}×`,
          `${fmt(ev(0.7)?.vs_onnxruntime, 2)}×`, p?.maxAbsDiff == null ? '—' : p.maxAbsDiff.toExponential(2)];
      })));
  } else {
    md.push(`Not run: ${[...new Set(peers.map((p) => p.skipped))].join('; ')}.`);
  }
  md.push('');
  md.push('### Accuracy against speed');
  md.push('');
  if (r.accuracy.missing) {
    md.push(`No accuracy table: ${r.accuracy.missing}. \`npm run eval\` measures the bundled Fashion-MNIST model's top-1`);
    md.push('at each keep rate and writes it there; then `npm run bench:e2e -- --from-json` redraws this report with the trade-off');
    md.push('plot, from this run\'s measurements.');
  } else {
    const a = r.accuracy;
    md.push(`From \`${path.relative(ROOT, ACCURACY)}\` (written by \`npm run eval\` for ${a.model}${a.machine ? ` on ${a.machine}` : ''}; its images/s come`);
    md.push('from that run, not from the tables above):');
    md.push('');
    const dense = a.rows.find((x) => x.keepRate === 1) ?? a.rows[0];
    md.push(table(['keep rate', 'fused', 'top-1', 'Δ top-1 vs dense', 'img/s', 'speedup'],
      a.rows.map((x) => [x.keepRate, x.fuse ? 'yes' : 'no', `${fmt(100 * x.top1, 2)}%`, `${fmt(100 * (x.top1 - dense.top1), 2)} pt`,
        fmt(x.imgPerSec, 1), `${fmt(x.imgPerSec / dense.imgPerSec, 2)}×`])));
    md.push('');
    md.push(`![accuracy against speed](${rel(r.plots.accuracy.png)})`);
  }
  md.push('');
  md.push(`![throughput against keep rate](${rel(r.plots.throughput.png)})`);
  md.push('');
  md.push(`![latency against keep rate](${rel(r.plots.latency.png)})`);
  md.push('');
  return md.join('\n');
}

// ---------------------------------------------------------------- main

async function measure(started) {
  const evit = require('../dist');
  const info = evit.backendInfo();
  const backends = c.availableBackends(info);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'evit-bench-e2e-'));
  const bar = progress(backends.length * PLAN.models.length * 2, { title: 'bench:e2e', quiet: args.quiet });
  const rows = [];
  const peers = [];
  const leftOut = [];
  try {
    for (const backend of backends) {
      for (const name of PLAN.models) {
        if ((c.nowMs() - started) / 1000 > TIME_LIMIT_S) {
          leftOut.push(`${backend} ${name}`);
          bar.step(`${backend} ${name}: left out (time limit)`);
          bar.step(`${backend} ${name}: left out (time limit)`);
          continue;
        }
        const res = await benchModel(evit, backend, name, dir, bar);
        rows.push(...res.rows);
        peers.push(res.peer);
        if (res.peer.skipped && backend === 'cpu' && name === PLAN.models[0]) bar.note(`onnxruntime-node peer skipped: ${res.peer.skipped}`);
      }
    }
  } finally {
    bar.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  const runs = (m) => rows.filter((x) => x.measure === m).map((x) => x.runs);
  const roundsSummary = ['latency', 'throughput'].map((m) => `${Math.min(...runs(m))}–${Math.max(...runs(m))} for ${m}`).join(', ');
  return { machine: c.machineInfo(evit.backendInfo()), backends, rows, peers, roundsSummary, leftOut, timeLimitS: TIME_LIMIT_S };
}

/** Writes the CSV, JSON, plots and markdown of a run (and the docs section for a full one). */
async function report(run, started) {
  fs.mkdirSync(OUT_DIR, { recursive: true });
  const files = { csv: path.join(OUT_DIR, `${PREFIX}.csv`), md: path.join(OUT_DIR, `${PREFIX}.md`), json: path.join(OUT_DIR, `${PREFIX}.json`) };
  fs.writeFileSync(files.csv, c.toCsv(CSV_COLUMNS, run.rows));
  fs.writeFileSync(files.json, `${JSON.stringify(run, null, 2)}\n`);
  const plots = await writePlots(run.rows);
  const accuracy = readAccuracy(ACCURACY);
  if (!accuracy.missing) plots.accuracy = await accuracyPlot(accuracy, path.join(OUT_DIR, `${PREFIX}-accuracy`));
  const md = markdown({ ...run, accuracy, plots, files });
  fs.writeFileSync(files.md, md);
  if (WRITE_DOC) writeSection('e2e', md);
  const written = [files.csv, files.json, files.md, ...Object.values(plots).flatMap((p) => [p.svg, p.png])];
  process.stderr.write(`[bench:e2e] wrote ${written.map((f) => path.relative(process.cwd(), f)).join(', ')}` +
    `${WRITE_DOC ? ' and docs/BENCHMARKS.md' : ''} in ${c.fmt((c.nowMs() - started) / 1000, 0)} s\n`);
}

async function main() {
  const started = c.nowMs();
  // --from-json: the report again from the last run's measurements, e.g. once the accuracy table exists.
  const run = args['from-json']
    ? JSON.parse(fs.readFileSync(path.join(OUT_DIR, `${PREFIX}.json`), 'utf8'))
    : await measure(started);
  await report(run, started);
}

module.exports = { readAccuracy, scheduleFlops };

if (require.main === module) {
  main().catch((err) => {
    process.stderr.write(`${err.stack || err}\n`);
    process.exit(1);
  });
}
