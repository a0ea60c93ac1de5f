#!/usr/bin/env node
'use strict';
/**
 * Queue benchmark (not a test): jobs/s and p50/p99 job latency of `evit worker` draining a BullMQ
 * queue on a local redis-server, with 1 and 2 worker processes, against `evit serve` over HTTP in the
 * same run, each at the same number of requests in flight (closed loop: every client waits for its
 * answer before sending the next).
 *
 *   npm run bench:queue                 (needs `npm run build` and redis-server)
 *   node bench/queue.js --quick         (short runs; writes bench/results/quick.queue.md)
 *   node bench/queue.js --from-json     (only the report again, from bench/results/queue.json)
 *
 * Model: the bundled one (models/fashion-mnist). Every server and worker is started fresh for each
 * configuration, with its defaults (threads: cores − 1). The producer and the HTTP clients run in this
 * process, on the same machine: they take CPU from the workers, as they would on a shared host.
 * Environment: EVIT_BENCH_SCALE (default 1) scales the run durations.
 */
const fs = require('node:fs');
const os = require('node:os');
const http = require('node:http');
const path = require('node:path');
const { spawn } = require('node:child_process');
const sharp = require('sharp');
const evit = require('../dist');
const { startRedis } = require('../test/helpers/redis');
const { writeSection } = require('./report');
const { cpuModel, table, fmt, quantile } = require('./common');

const ROOT = path.resolve(__dirname, '..');
const QUICK = process.argv.includes('--quick');
const SCALE = Number(process.env.EVIT_BENCH_SCALE) > 0 ? Number(process.env.EVIT_BENCH_SCALE) : 1;
const DURATION_S = QUICK ? 2 : Math.round(15 * SCALE);
const WARMUP_S = QUICK ? 1 : 3;
const CONCURRENCY = QUICK ? [16] : [8, 64];
const CLI = path.join(ROOT, 'dist', 'cli.js');

const log = (msg) => process.stderr.write(`[bench:queue] ${msg}\n`);
// Servers and workers this run started: stopped if the run is interrupted.
const children = new Set();
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    for (const c of children) c.kill('SIGKILL');
    process.exit(130);
  });
}

// ---------------------------------------------------------------- processes

/** Starts `evit <args>`; resolves once its stderr matches `readyLine` (the first group is returned). */
function startCli(label, args, readyLine) {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  children.add(child);
  let stderr = '';
  child.stderr.on('data', (c) => { stderr += c; });
  const exited = new Promise((resolve) => child.on('exit', (code) => { children.delete(child); resolve(code); }));
  const ready = new Promise((resolve, reject) => {
    const check = () => {
      const m = readyLine.exec(stderr);
      if (m) resolve(m[1] ?? true);
    };
    child.stderr.on('data', check);
    exited.then((code) => reject(new Error(`${label} exited with ${code}: ${stderr.trim().split('\n').slice(-3).join(' | ')}`)));
  });
  return { ready, stop: () => { child.kill('SIGTERM'); return exited; } };
}

// ---------------------------------------------------------------- clients

/** `clients` loops, each sending the next request when the last is answered, for `seconds`. */
async function closedLoop(clients, seconds, send) {
  const latencies = [];
  const batches = [];
  let errors = 0;
  const end = performance.now() + seconds * 1000;
  const t0 = performance.now();
  await Promise.all(Array.from({ length: clients }, async () => {
    while (performance.now() < end) {
      const start = performance.now();
      try {
        const r = await send();
        latencies.push(performance.now() - start);
        batches.push(r.batchSize);
      } catch {
        errors++;
      }
    }
  }));
  const wall = (performance.now() - t0) / 1000;
  return {
    done: latencies.length,
    perSecond: latencies.length / wall,
    p50: quantile(latencies, 0.5),
    p99: quantile(latencies, 0.99),
    meanBatch: batches.reduce((a, b) => a + b, 0) / Math.max(1, batches.length),
    errors,
  };
}

function httpClient(base, body, type) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
  const url = new URL('/v1/classify', base);
  const send = () => new Promise((resolve, reject) => {
    const req = http.request(url, { method: 'POST', agent, headers: { 'content-type': type, 'content-length': body.length } }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => (res.statusCode === 200 ? resolve(JSON.parse(Buffer.concat(chunks).toString())) : reject(new Error(`HTTP ${res.statusCode}`))));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
  return { send, close: () => agent.destroy() };
}

// ---------------------------------------------------------------- runs

async function runServe(concurrency, body, type) {
  const server = startCli('evit serve', ['serve', '--port', '0'], /serving on (http:\/\/\S+)/);
  const base = await server.ready;
  const client = httpClient(base, body, type);
  await closedLoop(concurrency, WARMUP_S, client.send);
  const r = await closedLoop(concurrency, DURATION_S, client.send);
  client.close();
  await server.stop();
  return r;
}

async function runQueue(workers, concurrency, redisUrl, body, runId) {
  const queue = `bench-${runId}`;
  const procs = Array.from({ length: workers }, (_, i) =>
    startCli(`worker ${i + 1}`, ['worker', '--redis', redisUrl, '--queue', queue, '--name', `w${i + 1}`], /worker (taking jobs)/));
  await Promise.all(procs.map((p) => p.ready));
  const jq = evit.openJobQueue({ connection: redisUrl, queue });
  await jq.waitUntilReady();
  // Results come from the events stream; Redis keeps only the latest completed jobs.
  const send = async () => jq.result(await jq.enqueue(body, { job: { removeOnComplete: { count: 5000 }, attempts: 1 } }), { timeoutMs: 60_000 });
  await closedLoop(concurrency, WARMUP_S, send);
  const r = await closedLoop(concurrency, DURATION_S, send);
  await jq.queue.obliterate({ force: true });
  await jq.close();
  await Promise.all(procs.map((p) => p.stop()));
  return r;
}

async function testImage(model) {
  const { imgSize, channels } = model.preprocess;
  const raw = Buffer.alloc(imgSize * imgSize * 3);
  for (let i = 0; i < raw.length; i++) raw[i] = (i * 37) & 255;
  let img = sharp(raw, { raw: { width: imgSize, height: imgSize, channels: 3 } });
  if (channels === 1) img = img.greyscale();
  const body = await img.png().toBuffer();
  return { body, type: 'image/png', width: imgSize, height: imgSize, bytes: body.length };
}

// ---------------------------------------------------------------- report

function report(r) {
  const md = ['## Queue workers: `evit worker` on BullMQ against `evit serve`', ''];
  md.push(`Machine: ${r.machine.cpu}, ${r.machine.cores} cores, Node ${r.machine.node}, redis-server ${r.machine.redis}, ` +
    `${r.machine.date.slice(0, 10)}, load average ${fmt(r.machine.loadAvgAtStart, 1)} when the run started. Model: ${r.model}, ` +
    `job and request body: a ${r.image.width}×${r.image.height} PNG of ${r.image.bytes} bytes. Each row: a fresh server or fresh ` +
    `workers (defaults: max batch 32, max wait 2 ms, ${r.threads} compute thread${r.threads > 1 ? 's' : ''} each), ${r.warmupS} s of ` +
    `warm-up, then ${r.durationS} s measured. "in flight" clients each send the next request (HTTP POST /v1/classify, or enqueue ` +
    'and wait for the result) once the last is answered; latency is what the client sees, enqueue to result. Clients, producer, ' +
    'Redis and workers share the machine\'s cores.');
  md.push('');
  if (r.machine.loadAvgAtStart > r.machine.cores) {
    md.push(`**The machine was busier than it has cores** (load ${fmt(r.machine.loadAvgAtStart, 1)} on ${r.machine.cores}): compare rows with each other, not with other machines.`);
    md.push('');
  }
  const head = ['path', 'in flight', 'jobs/s', 'p50 ms', 'p99 ms', 'mean batch', 'errors'];
  md.push(table(head, r.rows.map((x) => [x.label, x.concurrency, fmt(x.perSecond), fmt(x.p50, 1), fmt(x.p99, 1), fmt(x.meanBatch), x.errors])));
  md.push('');
  md.push('Against `evit serve` over HTTP at the same number in flight (throughput ratio; p50 and p99 latency ratio):');
  md.push('');
  const rows = [];
  for (const c of r.concurrency) {
    const serve = r.rows.find((x) => x.key === 'serve' && x.concurrency === c);
    for (const x of r.rows.filter((y) => y.key !== 'serve' && y.concurrency === c))
      rows.push([x.label, c, `${fmt(x.perSecond / serve.perSecond, 2)}×`, `${fmt(x.p50 / serve.p50, 2)}×`, `${fmt(x.p99 / serve.p99, 2)}×`]);
  }
  md.push(table(['path', 'in flight', 'throughput / serve', 'p50 / serve', 'p99 / serve'], rows));
  md.push('');
  const one = r.rows.filter((x) => x.key === 'queue-1');
  const two = r.rows.filter((x) => x.key === 'queue-2');
  if (one.length && two.length) {
    md.push(`Two workers against one, same machine: ${r.concurrency.map((c) => `${fmt(two.find((x) => x.concurrency === c).perSecond / one.find((x) => x.concurrency === c).perSecond, 2)}× the jobs/s at ${c} in flight`).join(', ')}. ` +
      `On ${r.machine.cores} cores a second worker competes with the first for the same CPUs; on separate machines (or pods) each brings its own.`);
    md.push('');
  }
  return md.join('\n');
}

// ---------------------------------------------------------------- main

function fromJson() {
  const result = JSON.parse(fs.readFileSync(path.join(__dirname, 'results', 'queue.json'), 'utf8'));
  writeSection('queue', report(result));
  log('wrote docs/BENCHMARKS.md (section queue) from bench/results/queue.json');
}

async function main() {
  if (process.argv.includes('--from-json')) return fromJson();
  const started = Date.now();
  const loadAtStart = os.loadavg()[0];
  const model = await evit.loadModel();
  const image = await testImage(model);
  model.dispose();
  const redis = await startRedis();
  const redisVersion = /v=(\S+)/.exec(require('node:child_process').spawnSync('redis-server', ['--version'], { encoding: 'utf8' }).stdout)?.[1] ?? '?';
  log(`redis-server ${redisVersion} on ${redis.url}; body ${image.bytes} bytes`);
  const rows = [];
  let runId = 0;
  try {
    for (const concurrency of CONCURRENCY) {
      const s = await runServe(concurrency, image.body, image.type);
      rows.push({ key: 'serve', label: 'evit serve (HTTP)', concurrency, ...s });
      log(`serve c=${concurrency}: ${fmt(s.perSecond)} req/s, p50 ${fmt(s.p50)} ms, p99 ${fmt(s.p99)} ms, mean batch ${fmt(s.meanBatch)}`);
      for (const workers of [1, 2]) {
        const q = await runQueue(workers, concurrency, redis.url, image.body, ++runId);
        rows.push({ key: `queue-${workers}`, label: `${workers} worker${workers > 1 ? 's' : ''} (BullMQ)`, concurrency, ...q });
        log(`${workers} worker(s) c=${concurrency}: ${fmt(q.perSecond)} jobs/s, p50 ${fmt(q.p50)} ms, p99 ${fmt(q.p99)} ms, mean batch ${fmt(q.meanBatch)}`);
      }
    }
  } finally {
    await redis.stop();
  }
  const result = {
    quick: QUICK,
    machine: { date: new Date().toISOString(), cpu: cpuModel(), cores: os.availableParallelism(), node: process.version, redis: redisVersion, loadAvgAtStart: loadAtStart },
    model: 'bundled Fashion-MNIST ViT (models/fashion-mnist)',
    image: { width: image.width, height: image.height, bytes: image.bytes },
    threads: Math.max(1, os.availableParallelism() - 1),
    durationS: DURATION_S,
    warmupS: WARMUP_S,
    concurrency: CONCURRENCY,
    rows,
    elapsedSeconds: (Date.now() - started) / 1000,
  };
  const dir = path.join(__dirname, 'results');
  fs.mkdirSync(dir, { recursive: true });
  const md = report(result);
  if (QUICK) fs.writeFileSync(path.join(dir, 'quick.queue.md'), md);
  else writeSection('queue', md);
  fs.writeFileSync(path.join(dir, QUICK ? 'quick.queue.json' : 'queue.json'), `${JSON.stringify(result, null, 2)}\n`);
  log(`done in ${fmt(result.elapsedSeconds, 0)} s; wrote ${QUICK ? 'bench/results/quick.queue.md' : 'docs/BENCHMARKS.md (section queue)'}`);
}

main().catch((err) => {
  process.stderr.write(`${err.stack || err}\n`);
  process.exit(1);
});
