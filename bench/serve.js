#!/usr/bin/env node
'use strict';
/**
 * Load benchmark of `evit serve` (not a test): autocannon on loopback against
 *   - evit serve with a fixed keep rate (the model's default) and with the adaptive policy
 *     (0.9 → 0.7 → 0.5 while the queueing delay exceeds 50 ms), at concurrency 1, 8 and 64;
 *   - a minimal fastify + onnxruntime-node server of the same (dense) model (bench/serve-ort.js),
 *     when onnxruntime-node and python3 with torch + onnx are present.
 * Reports throughput, p50/p99 latency, event-loop delay p99 inside the server while it is
 * saturated (bench/loopProbe.js, perf_hooks.monitorEventLoopDelay), the keep rates that served
 * the requests, and RSS before and after 10,000 requests.
 *
 *   npm run bench:serve                 (needs `npm run build` first)
 *   node bench/serve.js --quick         (short runs; writes bench/results/quick.serve.md)
 *   node bench/serve.js --from-json     (only the report again, from bench/results/serve.json)
 *
 * Model: the bundled one (models/fashion-mnist) when it exists, else the tiny test fixture.
 * Every server runs in its own process, started fresh for each configuration.
 * Environment: EVIT_BENCH_SCALE (default 1) scales the run durations.
 */
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawn, spawnSync } = require('node:child_process');
const autocannon = require('autocannon');
const sharp = require('sharp');
const evit = require('../dist');
const { writeSection } = require('./report');
const { requireOrt, ortVersion, exportOnnx, cpuModel, table, fmt } = require('./common');

const ROOT = path.resolve(__dirname, '..');
const QUICK = process.argv.includes('--quick');
const SCALE = Number(process.env.EVIT_BENCH_SCALE) > 0 ? Number(process.env.EVIT_BENCH_SCALE) : 1;
const DURATION_S = QUICK ? 3 : Math.round(15 * SCALE);
const WARMUP_S = QUICK ? 1 : 3;
const CONCURRENCY = [1, 8, 64];
const LEAK_REQUESTS = QUICK ? 1000 : 10_000;
const BUNDLED = path.join(ROOT, 'models', 'fashion-mnist', 'model.safetensors');
const FIXTURE = path.join(ROOT, 'test', 'fixtures', 'tiny-evit.safetensors');
const CLI = path.join(ROOT, 'dist', 'cli.js');
const PROBE = path.join(__dirname, 'loopProbe.js');
const ADAPTIVE = { rates: [0.9, 0.7, 0.5], targetMs: 20 };

const log = (msg) => process.stderr.write(`[bench:serve] ${msg}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------- servers

/** Starts a server process with the loop probe preloaded; resolves once it prints its address. */
function startServer(label, args) {
  const child = spawn(process.execPath, ['-r', PROBE, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  const probes = [];
  child.stderr.on('data', (c) => {
    stderr += c;
    for (const m of String(c).matchAll(/^loop-probe (\{.*\})$/gm)) probes.push(JSON.parse(m[1]));
  });
  const exited = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
  const ready = new Promise((resolve, reject) => {
    const t = setInterval(() => {
      const m = /serving on (http:\/\/\S+)/.exec(stderr);
      if (m) {
        clearInterval(t);
        resolve(m[1]);
      }
    }, 20);
    exited.then((code) => {
      clearInterval(t);
      reject(new Error(`${label} exited with ${code}: ${stderr.trim().split('\n').slice(-3).join(' | ')}`));
    });
  });
  /** Loop delay and RSS since the previous call. */
  const probe = async () => {
    const n = probes.length;
    child.kill('SIGUSR2');
    for (let i = 0; i < 200 && probes.length === n; i++) await sleep(10);
    if (probes.length === n) throw new Error(`${label} did not answer the loop probe`);
    return probes[n];
  };
  const stop = async () => {
    child.kill('SIGTERM');
    return exited;
  };
  return { ready, probe, stop, stderr: () => stderr };
}

async function metricsOf(base) {
  const res = await fetch(`${base}/metrics`);
  const out = new Map();
  for (const line of (await res.text()).split('\n')) {
    const m = /^([a-z_]+(?:\{[^}]*\})?) (\S+)$/.exec(line);
    if (m) out.set(m[1], Number(m[2]));
  }
  return out;
}

/** Share of batches per keep rate, and mean batch size, between two /metrics scrapes. */
function batchStats(before, after) {
  const share = {};
  let total = 0;
  for (const [k, v] of after) {
    const m = /^evit_batches_total\{keep_rate="([^"]+)"\}$/.exec(k);
    if (!m) continue;
    const d = v - (before.get(k) ?? 0);
    if (d > 0) share[m[1]] = d;
    total += d;
  }
  for (const k of Object.keys(share)) share[k] /= total;
  const diff = (k) => (after.get(k) ?? 0) - (before.get(k) ?? 0);
  return { keepRateShare: share, meanBatch: diff('evit_batch_size_sum') / diff('evit_batch_size_count'), batches: total };
}

function load(url, body, type, opts) {
  return autocannon({
    url: `${url}/v1/classify`,
    method: 'POST',
    headers: { 'content-type': type },
    body,
    ...opts,
  });
}

// ---------------------------------------------------------------- one engine

async function runEngine({ label, args, body, type, metrics }) {
  const rows = [];
  for (const connections of CONCURRENCY) {
    const server = startServer(label, args);
    const base = await server.ready;
    await load(base, body, type, { connections: Math.max(connections, 4), duration: WARMUP_S });
    const before = metrics ? await metricsOf(base) : null;
    await server.probe(); // starts the loop-delay window of the measured run
    const r = await load(base, body, type, { connections, duration: DURATION_S });
    const loop = await server.probe();
    const stats = metrics ? batchStats(before, await metricsOf(base)) : null;
    await server.stop();
    const row = {
      concurrency: connections,
      requests: r.requests.total,
      reqPerSec: r.requests.total / r.duration,
      p50: r.latency.p50,
      p99: r.latency.p99,
      non2xx: r.non2xx,
      errors: r.errors + r.timeouts,
      loop,
      ...(stats ?? {}),
    };
    rows.push(row);
    log(`${label} c=${connections}: ${fmt(row.reqPerSec)} req/s, p50 ${row.p50} ms, p99 ${row.p99} ms, loop p99 ${fmt(loop.p99, 2)} ms` +
      (stats ? `, mean batch ${fmt(stats.meanBatch)}, keep rates ${JSON.stringify(stats.keepRateShare)}` : '') +
      (row.non2xx || row.errors ? `, ${row.non2xx} non-2xx, ${row.errors} errors` : ''));
  }
  return rows;
}

/** RSS after a warm-up, after LEAK_REQUESTS more requests, and after another LEAK_REQUESTS. */
async function memoryRun(label, args, body, type) {
  const server = startServer(label, args);
  const base = await server.ready;
  await load(base, body, type, { connections: 8, amount: 500 });
  await sleep(500);
  const rss = [(await server.probe()).rss];
  for (let i = 0; i < 2; i++) {
    const r = await load(base, body, type, { connections: 8, amount: LEAK_REQUESTS });
    if (r.non2xx || r.errors) log(`${label} memory run: ${r.non2xx} non-2xx, ${r.errors} errors`);
    await sleep(500);
    rss.push((await server.probe()).rss);
  }
  await server.stop();
  log(`${label} RSS: ${rss.map((b) => fmt(b / 2 ** 20)).join(' → ')} MiB over 2 × ${LEAK_REQUESTS} requests`);
  return { requests: LEAK_REQUESTS, rssMiB: rss.map((b) => b / 2 ** 20) };
}

// ---------------------------------------------------------------- report

const shareText = (s) => (s ? Object.entries(s).sort((a, b) => b[0] - a[0]).map(([k, v]) => `${k}: ${fmt(100 * v, 0)}%`).join(', ') : '');

function report(r) {
  const md = ['## Serving: `evit serve` under load', ''];
  md.push(`Machine: ${r.machine.cpu}, ${r.machine.cores} cores, Node ${r.machine.node}, ${r.machine.date.slice(0, 10)}` +
    `${r.machine.note ? ` (${r.machine.note})` : ''}, load average ${fmt(r.machine.loadAvgAtStart, 1)} when the run started. Model: ${r.model.name} (${r.model.imgSize}×${r.model.imgSize}, ` +
    `${r.model.channels} channel${r.model.channels > 1 ? 's' : ''}, ${r.model.classes} classes), request body: a ${r.image.width}×${r.image.height} ` +
    `${r.image.format} of ${r.image.bytes} bytes. autocannon runs in the same machine as the server, ${r.durationS} s per row after a ` +
    `${r.warmupS} s warm-up, each row against a freshly started server. Server options: max batch ${r.serve.maxBatch}, max wait ` +
    `${r.serve.maxWaitMs} ms, one batch in flight, ${r.serve.threads} compute thread${r.serve.threads > 1 ? 's' : ''} (the default: one core is left ` +
    'to the event loop).');
  md.push('');
  if (r.machine.loadAvgAtStart > r.machine.cores) {
    md.push(`**The machine was busier than it has cores** (load ${fmt(r.machine.loadAvgAtStart, 1)} on ${r.machine.cores}): the server and ` +
      'autocannon got a fraction of a core each, so throughput, latencies and loop delays below mostly measure waiting for ' +
      'the CPU. Compare rows with each other, not with other machines.');
    md.push('');
  }
  md.push('"loop p99" is the event-loop delay inside the server during the measured run (perf_hooks.monitorEventLoopDelay,');
  md.push('10 ms sampling, delay beyond the timer period); target < 10 ms while saturated. "loop busy" is the share of wall');
  md.push('time the event loop spent in callbacks (performance.eventLoopUtilization; time the thread is preempted inside a');
  md.push('callback counts as busy). "server CPU ms/req" is the server process\'s CPU time, all threads (forward passes');
  md.push('included), per request: unlike the delays, it does not grow when other processes take the CPU. "keep rates" is the share of');
  md.push(`batches run at each keep rate; the adaptive policy steps ${ADAPTIVE.rates.join(' → ')} while the queueing delay`);
  md.push(`exceeds ${ADAPTIVE.targetMs} ms and back up when it falls below half of that.`);
  md.push('');
  const head = ['server', 'concurrency', 'req/s', 'p50 ms', 'p99 ms', 'loop p99 ms', 'loop max ms', 'loop busy', 'server CPU ms/req', 'mean batch', 'keep rates', 'non-2xx'];
  const rows = [];
  for (const e of r.engines) {
    if (e.skipped) continue;
    for (const x of e.rows) {
      rows.push([e.label, x.concurrency, fmt(x.reqPerSec), x.p50, x.p99, fmt(x.loop.p99, 2), fmt(x.loop.max, 1),
        `${fmt(100 * x.loop.utilization, 0)}%`, fmt((1000 * x.loop.cpuSeconds) / x.requests, 2),
        x.meanBatch === undefined ? '' : fmt(x.meanBatch), shareText(x.keepRateShare), x.non2xx + x.errors]);
    }
  }
  md.push(table(head, rows));
  md.push('');
  const fixed = r.engines.find((e) => e.key === 'fixed');
  const adaptive = r.engines.find((e) => e.key === 'adaptive');
  if (fixed && adaptive) {
    md.push('Adaptive policy against the fixed keep rate, same concurrency:');
    md.push('');
    md.push(table(['concurrency', 'throughput ratio', 'p99 ratio', 'keep rates (adaptive)'], CONCURRENCY.map((c) => {
      const a = adaptive.rows.find((x) => x.concurrency === c);
      const f = fixed.rows.find((x) => x.concurrency === c);
      return [c, `${fmt(a.reqPerSec / f.reqPerSec, 2)}×`, `${fmt(a.p99 / f.p99, 2)}×`, shareText(a.keepRateShare)];
    })));
    md.push('');
  }
  const ort = r.engines.find((e) => e.key === 'ort');
  if (ort?.skipped) {
    md.push(`Peer (fastify + onnxruntime-node, bench/serve-ort.js): skipped: ${ort.skipped}.`);
  } else if (ort) {
    md.push(`Peer: bench/serve-ort.js, fastify + onnxruntime-node ${ort.version} (CPU, ${r.serve.threads} intra-op thread${r.serve.threads > 1 ? 's' : ''}), one`);
    md.push(`session.run per request on the dense model exported by bench/export_onnx.py (torch ${ort.torch}),`);
    md.push('same preprocessing as evit. evit / peer throughput at the same concurrency:');
    md.push('');
    md.push(table(['concurrency', 'evit fixed / peer', 'evit adaptive / peer'], CONCURRENCY.map((c) => {
      const o = ort.rows.find((x) => x.concurrency === c);
      return [c, `${fmt(fixed.rows.find((x) => x.concurrency === c).reqPerSec / o.reqPerSec, 2)}×`,
        `${fmt(adaptive.rows.find((x) => x.concurrency === c).reqPerSec / o.reqPerSec, 2)}×`];
    })));
  }
  md.push('');
  md.push(`Memory: resident set size after a 500-request warm-up, then after each of two runs of ${r.memory.evit.requests.toLocaleString('en-US')} ` +
    'requests (concurrency 8):');
  md.push('');
  md.push(table(['server', 'after warm-up MiB', `after ${r.memory.evit.requests} MiB`, `after ${2 * r.memory.evit.requests} MiB`],
    Object.entries(r.memory).filter(([, m]) => m && !m.skipped).map(([k, m]) => [k === 'evit' ? 'evit serve' : 'onnxruntime-node peer', ...m.rssMiB.map((x) => fmt(x))])));
  md.push('');
  return md.join('\n');
}

// ---------------------------------------------------------------- main

/** Why Debian's python3 cannot export ONNX (torch.onnx needs the onnx module), with the fix; null when it can. */
function pythonOnnx() {
  const r = spawnSync('/usr/bin/python3', ['-c', 'import onnx'], { encoding: 'utf8', timeout: 60_000 });
  if (r.error) return `/usr/bin/python3 cannot run (${r.error.message})`;
  if (r.status !== 0) return 'python3 has no onnx module; install it with `apt-get install -y python3-onnx`';
  return null;
}

async function testImage(model) {
  const { imgSize, channels } = model.preprocess;
  // Slightly larger than the model input, so the server really resizes; greyscale models get a greyscale image.
  const side = imgSize <= 64 ? imgSize : Math.round(imgSize * 1.25);
  const raw = Buffer.alloc(side * side * 3);
  for (let y = 0; y < side; y++) {
    for (let x = 0; x < side; x++) {
      const o = (y * side + x) * 3;
      raw[o] = (x * 255) / side;
      raw[o + 1] = (y * 255) / side;
      raw[o + 2] = ((x ^ y) * 7) & 255;
    }
  }
  let img = sharp(raw, { raw: { width: side, height: side, channels: 3 } });
  if (channels === 1) img = img.greyscale();
  const format = channels === 1 ? 'png' : 'jpeg';
  const body = await (format === 'png' ? img.png() : img.jpeg({ quality: 90 })).toBuffer();
  return { body, type: `image/${format}`, width: side, height: side, format, bytes: body.length };
}

/** Rewrites the report from bench/results/serve.json without measuring again. */
function fromJson() {
  const result = JSON.parse(fs.readFileSync(path.join(__dirname, 'results', 'serve.json'), 'utf8'));
  writeSection('serve', report(result));
  log('wrote docs/BENCHMARKS.md (section serve) from bench/results/serve.json');
}

async function main() {
  if (process.argv.includes('--from-json')) return fromJson();
  const started = Date.now();
  // Other work on the machine shows up in every number here; the report says how busy it was.
  const loadAtStart = os.loadavg()[0];
  const bundled = fs.existsSync(BUNDLED);
  const weights = bundled ? BUNDLED : FIXTURE;
  const loadOpts = bundled ? {} : { numHeads: 3 };
  const model = await evit.loadModel(weights, loadOpts);
  const modelInfo = {
    name: bundled ? 'bundled Fashion-MNIST ViT (models/fashion-mnist)' : 'tiny test fixture (test/fixtures/tiny-evit.safetensors, random weights)',
    imgSize: model.imgSize,
    channels: model.architecture.inChans,
    classes: model.architecture.numClasses,
    numHeads: model.architecture.numHeads,
    keepRate: model.schedule.keepRate,
  };
  const preprocess = model.preprocess;
  model.dispose();
  const image = await testImage({ preprocess });
  log(`model: ${modelInfo.name}; body ${image.type} ${image.width}×${image.height}, ${image.bytes} bytes`);

  // evit serve's default: one core left to the event loop. The peer gets the same number of compute threads.
  const serve = { maxBatch: 32, maxWaitMs: 2, threads: Math.max(1, os.availableParallelism() - 1) };
  const evitArgs = [CLI, 'serve', '--port', '0', '--weights', weights, ...(bundled ? [] : ['--heads', '3'])];
  const engines = [
    { key: 'fixed', label: `evit, keep ${modelInfo.keepRate}`, args: evitArgs, metrics: true },
    { key: 'adaptive', label: 'evit, adaptive', args: [...evitArgs, '--adaptive', '--adaptive-rates', ADAPTIVE.rates.join(','), '--target-ms', String(ADAPTIVE.targetMs)], metrics: true },
  ];

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'evit-bench-serve-'));
  const ortEngine = { key: 'ort', label: 'onnxruntime-node peer' };
  const ort = requireOrt();
  if (ort.skipped) {
    ortEngine.skipped = ort.skipped;
  } else {
    const onnxFile = path.join(dir, 'model.onnx');
    log('exporting the ONNX model with /usr/bin/python3 (torch + onnx)…');
    const exp = pythonOnnx() ?? exportOnnx(weights, onnxFile, modelInfo.numHeads);
    if (typeof exp === 'string') ortEngine.skipped = exp;
    else Object.assign(ortEngine, exp, { version: ortVersion(), args: [path.join(__dirname, 'serve-ort.js'), '--onnx', onnxFile, '--preprocess', JSON.stringify(preprocess), '--threads', String(serve.threads)] });
  }
  if (ortEngine.skipped) log(`onnxruntime-node peer skipped: ${ortEngine.skipped}`);
  engines.push(ortEngine);

  try {
    for (const e of engines) {
      if (e.skipped) continue;
      e.rows = await runEngine({ ...e, body: image.body, type: image.type });
    }
    const memory = {
      evit: await memoryRun('evit', evitArgs, image.body, image.type),
      ort: ortEngine.skipped ? { skipped: ortEngine.skipped } : await memoryRun('onnxruntime-node peer', ortEngine.args, image.body, image.type),
    };
    const result = {
      quick: QUICK,
      machine: {
        date: new Date().toISOString(), cpu: cpuModel(), cores: os.availableParallelism(), node: process.version,
        note: process.env.EVIT_BENCH_MACHINE_NOTE ?? null,
        loadAvgAtStart: loadAtStart,
      },
      model: modelInfo,
      image: { width: image.width, height: image.height, format: image.format, bytes: image.bytes },
      serve,
      durationS: DURATION_S,
      warmupS: WARMUP_S,
      engines: engines.map(({ args: _a, ...e }) => e),
      memory,
      elapsedSeconds: (Date.now() - started) / 1000,
    };
    const resultsDir = path.join(__dirname, 'results');
    fs.mkdirSync(resultsDir, { recursive: true });
    const md = report(result);
    if (QUICK) fs.writeFileSync(path.join(resultsDir, 'quick.serve.md'), md);
    else writeSection('serve', md);
    fs.writeFileSync(path.join(resultsDir, QUICK ? 'quick.serve.json' : 'serve.json'), `${JSON.stringify(result, null, 2)}\n`);
    log(`done in ${fmt(result.elapsedSeconds, 0)} s; wrote ${QUICK ? 'bench/results/quick.serve.md' : 'docs/BENCHMARKS.md (section serve)'}`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  process.stderr.write(`${err.stack || err}\n`);
  process.exit(1);
});
