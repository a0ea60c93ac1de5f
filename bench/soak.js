#!/usr/bin/env node
'use strict';
/**
 * Soak of `evit serve` under mixed good and hostile traffic (not a benchmark of speed):
 *   - good requests (raw png/jpeg/webp, .npy, JSON base64, v2 FP32 and BYTES tensors) from
 *     autocannon on 16 keep-alive connections, every answer checked against the library's
 *     (Model.classify / Model.forward of the same input);
 *   - at the same time, hostile ones from 6 more clients: JSON nested 5 million deep, thin and
 *     huge PNGs, decompression-bomb headers, corrupt JPEGs, NaN and overflowing tensors, bad
 *     base64, bodies over the limit, 25-megapixel images, clients that hang up mid-request or send
 *     a byte at a time, malformed HTTP, thousands of distinct keep rates and mutated requests of
 *     every kind; each must get its expected answer.
 * It reports the p50/p99 of good requests alone and under the mix, every wrong or missing
 * answer, the server's resident memory at the start, peak and end, event-loop delay and the
 * size of /metrics, and fails (exit 1) when any check does.
 *
 *   npm run soak                       (10,000 mixed requests; needs `npm run build` first)
 *   node bench/soak.js --requests 2000 --write   (writes the results into docs/SERVING.md)
 *
 * Options: --requests N (mixed phase, default 10000), --hostile-share F (default 0.3),
 * --baseline N (good requests alone first, default 1000), --seed N, --write, --json.
 */
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const zlib = require('node:zlib');
const { spawn } = require('node:child_process');
const autocannon = require('autocannon');
const sharp = require('sharp');
const evit = require('../dist');
const { mulberry32 } = require('../test/helpers/reference');
const { seedRequests, referenceAnswer, checkResponse, isErrorBody, readResponse } = require('../test/helpers/serveCorpus');
const { mutateRequest, send } = require('../test/helpers/httpMutations');
const { writeBlock } = require('./report');
const { cpuModel, table, fmt, quantile } = require('./common');

const ROOT = path.resolve(__dirname, '..');
const CLI = path.join(ROOT, 'dist', 'cli.js');
const SERVING_DOC = path.join(ROOT, 'docs', 'SERVING.md');
const REQUEST_TIMEOUT_MS = 2000;
const MODEL_NAME = 'soak';

const pick = (rand, list) => list[Math.floor(rand() * list.length)];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const rssMiB = (pid) => Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN) / 1024;

function startServe(env) {
  const args = [CLI, 'serve', '--port', '0', '--model-name', MODEL_NAME, '--request-timeout-ms', String(REQUEST_TIMEOUT_MS), '--max-queue', '512'];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'], env });
  let stderr = '';
  child.stderr.on('data', (c) => { stderr += c; });
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  const address = new Promise((resolve, reject) => {
    child.stderr.on('data', () => { const m = /serving on (http:\/\/\S+)/.exec(stderr); if (m) resolve(m[1]); });
    exited.then((e) => reject(new Error(`evit serve exited (${e.code ?? e.signal}): ${stderr}`)));
  });
  return { child, exited, address, stderr: () => stderr };
}

function greyPng(width, height) {
  const chunk = (type, data) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const td = Buffer.concat([Buffer.from(type, 'latin1'), data]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(zlib.crc32(td) >>> 0);
    return Buffer.concat([len, td, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8;
  const rows = Buffer.alloc((width + 1) * height, 128);
  for (let y = 0; y < height; y++) rows[y * (width + 1)] = 0;
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk('IHDR', ihdr), chunk('IDAT', zlib.deflateSync(rows, { level: 9 })), chunk('IEND', Buffer.alloc(0))]);
}

async function claimedPng(w, h) {
  const png = Buffer.from(await sharp({ create: { width: 8, height: 8, channels: 3, background: '#808080' } }).png().toBuffer());
  png.writeUInt32BE(w, 16);
  png.writeUInt32BE(h, 20);
  png.writeUInt32BE(zlib.crc32(png.subarray(12, 29)) >>> 0, 29);
  return png;
}

async function noiseImage(rand, w, h, format) {
  const raw = Buffer.alloc(w * h * 3);
  for (let i = 0; i < raw.length; i++) raw[i] = Math.floor(rand() * 256);
  const s = sharp(raw, { raw: { width: w, height: h, channels: 3 } });
  return format === 'jpeg' ? s.jpeg({ quality: 85 }).toBuffer() : format === 'webp' ? s.webp().toBuffer() : s.png().toBuffer();
}

/** Good requests with their reference answers: the corpus seeds plus images of many sizes. */
async function goodPool(model, rand, seed) {
  const seeds = (await seedRequests(model, MODEL_NAME, seed)).filter((r) => !r.body.includes('"binary_data'));
  const extra = [];
  for (let i = 0; i < 24; i++) {
    const [w, h] = pick(rand, [[28, 28], [40, 32], [64, 48], [120, 90], [320, 240], [640, 480]]);
    const format = pick(rand, ['png', 'jpeg', 'webp']);
    const img = await noiseImage(rand, w, h, format);
    const keep = pick(rand, ['', '?keepRate=0.5', '?keepRate=0.9', '?top=3']);
    extra.push(i % 2
      ? { route: 'v1', kind: `v1 ${format}`, path: `/v1/classify${keep}`, headers: { 'content-type': `image/${format}` }, body: img }
      : { route: 'v1', kind: 'v1 JSON', path: '/v1/classify', headers: { 'content-type': 'application/json' }, body: Buffer.from(JSON.stringify({ image: img.toString('base64'), keepRate: keep ? 0.5 : undefined })) });
  }
  const pool = [];
  for (const req of [...seeds, ...extra]) {
    const expected = await referenceAnswer(model, req);
    if (expected.refused) throw new Error(`good request ${req.kind} is refused by the reference: ${expected.refused}`);
    pool.push({ req, expected });
  }
  return pool;
}

/** Sends with a socket of its own, gives up after `afterMs`: a client that hangs up. */
function hangUp(base, req, afterMs, partial) {
  return new Promise((resolve) => {
    const r = http.request(new URL(req.path, base), { method: 'POST', headers: { ...req.headers, 'content-length': req.body.length }, agent: false });
    r.on('error', () => {});
    r.on('response', (res) => res.resume());
    if (partial) r.write(req.body.subarray(0, req.body.length >> 1));
    else r.end(req.body);
    setTimeout(() => { r.destroy(); resolve(null); }, afterMs);
  });
}

/** Headers a byte every 100 ms: resolves the status and JSON body, and when it came. */
function slowloris(port) {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const sock = net.connect(port, '127.0.0.1');
    const head = `POST /v1/classify HTTP/1.1\r\nHost: x\r\nX-Slow: ${'s'.repeat(200)}`;
    let i = 0;
    let text = '';
    let at = null;
    const timer = setInterval(() => { if (i < head.length && !sock.destroyed) sock.write(head[i++]); }, 100);
    const guard = setTimeout(() => sock.destroy(), REQUEST_TIMEOUT_MS + 5000);
    sock.on('data', (d) => { at ??= performance.now() - t0; text += d.toString('latin1'); });
    sock.on('error', () => {});
    sock.on('close', () => {
      clearInterval(timer);
      clearTimeout(guard);
      let body = null;
      try { body = JSON.parse(text.split('\r\n\r\n')[1] ?? ''); } catch { /* not JSON */ }
      resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0), body, ms: at ?? performance.now() - t0 });
    });
  });
}

function rawExchange(port, bytes) {
  return new Promise((resolve) => {
    const sock = net.connect(port, '127.0.0.1');
    let text = '';
    sock.on('data', (d) => { text += d.toString('latin1'); });
    sock.on('error', () => {});
    sock.on('close', () => {
      let body = null;
      try { body = JSON.parse(text.split('\r\n\r\n')[1] ?? ''); } catch { /* not JSON */ }
      resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0), body });
    });
    setTimeout(() => sock.destroy(), 5000);
    sock.end(bytes);
  });
}

const codeOf = (r) => r.json?.error?.code ?? r.json?.code;
const refusedWith = (status, code) => (r) => (r.status === status && codeOf(r) === code ? null : `${r.status} ${codeOf(r) ?? r.error ?? r.raw?.toString().slice(0, 120)}, expected ${status} ${code}`);

/** The hostile requests: [kind, count, run(base) -> reason or null]. Counts scale with the run. */
async function hostileKinds(model, rand, seed) {
  const v1 = (type, body, p = '/v1/classify') => ({ route: 'v1', path: p, headers: { 'content-type': type }, body });
  const v2 = (json) => ({ route: 'v2', path: `/v2/models/${MODEL_NAME}/infer`, headers: { 'content-type': 'application/json' }, body: Buffer.from(typeof json === 'string' ? json : JSON.stringify(json)) });
  const deep = Buffer.from('['.repeat(5_000_000) + ']'.repeat(5_000_000));
  const thin = greyPng(1, 40_000_000);
  const wide = greyPng(40_000_000, 1);
  const needle = greyPng(1, 4_000_000);
  const bomb = await claimedPng(100_000, 100_000);
  const photo = await noiseImage(rand, 640, 480, 'jpeg');
  const corrupt = Buffer.concat([photo.subarray(0, 600), Buffer.from(Array.from({ length: photo.length - 600 }, () => Math.floor(rand() * 256)))]);
  const { inChans } = model.architecture;
  const size = model.imgSize;
  const per = inChans * size * size;
  const nan = new Float32Array(per).fill(0.1);
  nan[per >> 1] = NaN;
  const huge = new Float32Array(per).fill(3e38);
  const side = 5000;
  const raw = Buffer.alloc(side * side * 3);
  for (let y = 0; y < side; y++) for (let x = 0; x < side; x++) { const i = (y * side + x) * 3; raw[i] = (x + y) & 255; raw[i + 1] = x & 255; raw[i + 2] = y & 255; }
  const large = await sharp(raw, { raw: { width: side, height: side, channels: 3 } }).png({ compressionLevel: 6, progressive: true }).toBuffer();
  const largeReq = v1('image/png', large);
  const largeAnswer = await referenceAnswer(model, largeReq);
  const small = await noiseImage(rand, 40, 32, 'png');
  const many = v2({ inputs: [{ name: 'image', shape: [32], datatype: 'BYTES', data: Array(32).fill(small.toString('base64')) }], outputs: [{ name: 'logits' }] });
  const manyAnswer = await referenceAnswer(model, many);
  const seeds = await seedRequests(model, MODEL_NAME, seed + 1);
  let keepAt = 0;

  const answered = (expected) => (r) => (r.status === 200 ? checkResponse(expected, r) : `${r.status} ${r.raw?.toString().slice(0, 120)}`);
  // Requests answered then checked against the library: the reference runs after the mix, off the clock.
  const later = [];
  const checkLater = (req) => (r) => { later.push({ req, r }); return null; };

  const kinds = [
    ['JSON nested 5,000,000 deep (/v1, 10 MB)', 12, (base) => send(base, undefined, v1('application/json', deep)).then(refusedWith(400, 'EVIT_BAD_REQUEST'))],
    ['JSON nested 5,000,000 deep (/v2, 10 MB)', 12, (base) => send(base, undefined, { ...v2('[]'), body: deep }).then(refusedWith(400, 'EVIT_BAD_REQUEST'))],
    ['1 x 40,000,000 PNG (78 KB)', 40, (base) => send(base, undefined, v1('image/png', thin)).then(refusedWith(400, 'EVIT_BAD_INPUT'))],
    ['40,000,000 x 1 PNG', 40, (base) => send(base, undefined, v1('image/png', wide)).then(refusedWith(400, 'EVIT_BAD_INPUT'))],
    ['1 x 4,000,000 PNG (8 KB)', 60, (base) => send(base, undefined, v1('image/png', needle)).then(refusedWith(400, 'EVIT_BAD_INPUT'))],
    ['header claims 100,000 x 100,000', 80, (base) => send(base, undefined, v1('image/png', bomb)).then(refusedWith(413, 'EVIT_IMAGE_TOO_LARGE'))],
    ['JPEG: 600 good bytes, then noise', 80, (base) => send(base, undefined, v1('image/jpeg', corrupt)).then(refusedWith(400, 'EVIT_BAD_INPUT'))],
    ['.npy holding NaN', 80, (base) => send(base, undefined, v1('application/x-npy', evit.serializeNpy(nan, [1, inChans, size, size]))).then(refusedWith(400, 'EVIT_BAD_INPUT'))],
    ['.npy of 3e38 (overflows the pass)', 40, (base) => send(base, undefined, v1('application/x-npy', evit.serializeNpy(huge, [1, inChans, size, size]))).then(refusedWith(400, 'EVIT_BAD_INPUT'))],
    ['JSON image not base64', 80, (base) => send(base, undefined, v1('application/json', Buffer.from('{"image": "**!!**"}'))).then(refusedWith(400, 'EVIT_BAD_INPUT'))],
    ['body over the 10 MiB limit', 12, (base) => send(base, undefined, v1('image/png', Buffer.alloc(11 << 20))).then(refusedWith(413, 'EVIT_BODY_TOO_LARGE'))],
    ['unsupported content type', 80, (base) => send(base, undefined, v1('text/html', Buffer.from('<svg/>'))).then(refusedWith(415, 'EVIT_UNSUPPORTED_MEDIA_TYPE'))],
    ['keepRate "0x1"', 40, (base) => send(base, undefined, { ...v1('image/png', small), path: '/v1/classify?keepRate=0x1' }).then(refusedWith(400, 'EVIT_BAD_OPTIONS'))],
    ['malformed HTTP', 40, (base) => rawExchange(Number(new URL(base).port), 'GARBAGE / HTTP/9\r\n\r\n').then((r) => (r.status === 400 && r.body?.error?.code === 'EVIT_BAD_REQUEST' ? null : `${r.status} ${JSON.stringify(r.body)}`))],
    ['25-megapixel interlaced PNG (large lane)', 20, (base) => send(base, undefined, largeReq).then((r) => (r.status === 429 && codeOf(r) === 'EVIT_OVERLOADED' ? null : answered(largeAnswer)(r)))],
    ['v2: 32 images in one request', 40, (base) => send(base, undefined, many).then(answered(manyAnswer))],
    ['hangs up after sending half the body', 100, (base) => hangUp(base, v1('image/png', large), 5, true)],
    ['hangs up while its image waits or decodes', 60, (base) => hangUp(base, largeReq, 20 + Math.floor(rand() * 100), false)],
    ['headers a byte every 100 ms (slowloris)', 8, (base) => slowloris(Number(new URL(base).port)).then((r) =>
      (r.status === 408 && r.body?.error?.code === 'EVIT_REQUEST_TIMEOUT' && r.ms >= REQUEST_TIMEOUT_MS - 50 && r.ms < REQUEST_TIMEOUT_MS + 1500 ? null : `${r.status} after ${r.ms.toFixed(0)} ms`))],
    ['a keep rate of its own (distinct each time)', 400, (base) => {
      const req = { ...v1('image/png', small), path: `/v1/classify?keepRate=${(0.2 + 0.8 * ((++keepAt * 7919) % 10007) / 10007).toFixed(6)}` };
      return send(base, undefined, req).then(checkLater(req));
    }],
    ['mutated request of any kind', 0, (base) => {
      const { req } = mutateRequest(pick(rand, seeds), rand);
      return send(base, undefined, req).then((r) => {
        if (r.status === 0) return `no answer: ${r.error}`;
        if (r.status >= 500) return `${r.status}`;
        if (r.status >= 400) return isErrorBody(req.route, r.json) ? null : `${r.status} without the JSON error body`;
        return checkLater(req)(r);
      });
    }],
  ];
  return { kinds, later };
}

/** Counts scaled to `n` hostile requests, even and at least 2 (one a half); mutated requests take the rest. */
function schedule(kinds, n, full = 3000) {
  const scaled = kinds.map(([kind, count, run]) => [kind, count === 0 ? 0 : 2 * Math.max(1, Math.round((count * n) / full / 2)), run]);
  const fixed = scaled.reduce((a, k) => a + k[1], 0);
  scaled[scaled.length - 1][1] = Math.max(0, n - fixed);
  return scaled;
}

async function metricsText(base) {
  return (await send(base, undefined, { path: '/metrics', headers: {}, body: Buffer.alloc(0), method: 'GET' })).raw.toString();
}

/** p99 of a Prometheus histogram (seconds) from its cumulative buckets: the first bound holding 99%. */
function histogramQuantile(text, name, q) {
  const buckets = [...text.matchAll(new RegExp(`^${name}_bucket\\{le="([^"]+)"\\} (\\S+)$`, 'gm'))].map((m) => [Number(m[1]), Number(m[2])]);
  const total = buckets.at(-1)?.[1] ?? 0;
  if (!total) return NaN;
  return buckets.find(([, c]) => c >= q * total)?.[0] ?? Infinity;
}

/** `amount` good requests on `connections` autocannon connections; each answer checked, its latency (ms) pushed to `latencies`. */
function runAutocannon(base, pool, amount, connections, check, latencies = []) {
  let next = 0;
  return new Promise((resolve, reject) => {
    autocannon({
      url: base,
      connections,
      amount,
      pipelining: 1,
      timeout: 30,
      requests: [{
        setupRequest(req, context) {
          const item = pool[next++ % pool.length];
          context.item = item;
          context.sentAt = performance.now();
          return { ...req, method: 'POST', path: item.req.path, headers: { ...item.req.headers }, body: item.req.body };
        },
        onResponse(status, body, context) {
          latencies.push(performance.now() - context.sentAt);
          check(context.item, status, body);
        },
      }],
    }, (err, result) => (err ? reject(err) : resolve(result)));
  });
}

async function soak({ requests = 10_000, hostileShare = 0.3, baseline = 1000, seed = 15, connections = 16, hostileClients = 6, growthMiB = 32, serverEnv = {}, log = () => {} } = {}) {
  const env = { ...process.env, ...serverEnv };
  const rand = mulberry32(seed);
  sharp.cache(false);
  const model = await evit.loadModel();
  log('building the requests and their reference answers…');
  const pool = await goodPool(model, rand, seed);
  const nHostile = Math.round(requests * hostileShare);
  const nGood = requests - nHostile;
  const { kinds, later } = await hostileKinds(model, rand, seed);
  const plan = schedule(kinds, nHostile);
  // Each half gets half of every kind, in its own shuffled order: the second half repeats the first's load.
  const shuffled = (list) => { for (let i = list.length - 1; i > 0; i--) { const j = Math.floor(rand() * (i + 1)); [list[i], list[j]] = [list[j], list[i]]; } return list; };
  const halves = [0, 1].map((h) => shuffled(plan.flatMap(([kind, count, run]) => {
    const mine = h === 0 ? Math.floor(count / 2) : count - Math.floor(count / 2);
    return Array.from({ length: mine }, () => [kind, run]);
  })));
  const tasks = [...halves[0], ...halves[1]];

  const s = startServe(env);
  const base = await s.address;
  const pid = s.child.pid;
  let peak = 0;
  const sampler = setInterval(() => { try { peak = Math.max(peak, rssMiB(pid)); } catch { /* exited */ } }, 100);
  const wrong = [];
  const check = (item, status, body) => {
    let why;
    if (status !== 200) why = `${status} ${String(body).slice(0, 160)}`;
    else {
      let json;
      try { json = JSON.parse(body); } catch { json = undefined; }
      why = checkResponse(item.expected, { json, raw: Buffer.from(body) });
    }
    if (why) wrong.push(`${item.req.kind}: ${why}`);
  };

  log(`warming up, then ${baseline} good requests alone…`);
  const rssFresh = rssMiB(pid);
  await runAutocannon(base, pool, 200, connections, check);
  // One of each hostile kind too, so the allocator has seen every size of peak before the start is taken.
  for (const [kind, , run] of plan) {
    const why = await run(base);
    if (why) wrong.push(`warm-up ${kind}: ${why}`);
  }
  const rssStart = rssMiB(pid);
  const metrics0 = await metricsText(base);
  const aloneLatencies = [];
  const alone = baseline > 0 ? await runAutocannon(base, pool, baseline, connections, check, aloneLatencies) : null;
  let mixedErrors = 0;

  log(`${requests} mixed requests: ${nGood} good on ${connections} connections, ${nHostile} hostile on ${hostileClients} more, in two halves…`);
  const outcomes = new Map(plan.map(([kind]) => [kind, { count: 0, failed: [] }]));
  let at = 0;
  const latencies = [];
  const rssHalf = [];
  let goodMs = 0;
  let hostileMs = 0;
  // Two halves, so memory still growing in the second is told apart from memory held since the first.
  for (const half of [0, 1]) {
    const upTo = half === 0 ? halves[0].length : tasks.length;
    const goodHere = half === 0 ? nGood >> 1 : nGood - (nGood >> 1);
    const t0 = performance.now();
    const hostile = Promise.all(Array.from({ length: hostileClients }, async () => {
      while (at < upTo) {
        const [kind, run] = tasks[at++];
        const o = outcomes.get(kind);
        o.count++;
        const why = await run(base);
        if (why) o.failed.push(why);
      }
    })).then(() => { hostileMs += performance.now() - t0; });
    const part = await runAutocannon(base, pool, goodHere, connections, check, latencies);
    goodMs += performance.now() - t0;
    await hostile;
    mixedErrors += part.errors + part.timeouts + part.non2xx;
    rssHalf.push(rssMiB(pid));
  }
  // The server must come back to idle: nothing queued, decoding or waiting.
  let idle = null;
  for (let i = 0; i < 200 && !idle; i++) {
    const h = (await send(base, undefined, { path: '/healthz', headers: {}, body: Buffer.alloc(0), method: 'GET' })).json;
    if (h && h.queued === 0 && h.inFlight === 0 && h.largeDecodes === 0 && h.largeWaiting === 0) idle = h;
    else await sleep(50);
  }
  await sleep(500);
  const rssEnd = rssMiB(pid);
  const metrics1 = await metricsText(base);
  clearInterval(sampler);

  log('checking the answers of requests with keep rates of their own and of mutated ones…');
  for (const { req, r } of later) {
    const why = checkResponse(await referenceAnswer(model, req), r);
    if (why) wrong.push(`${req.kind ?? req.path}: ${why}`);
  }
  s.child.kill('SIGTERM');
  const exit = await s.exited;
  model.dispose();

  const evitLines = (t) => t.split('\n').filter((l) => l.startsWith('evit_')).length;
  const keepSeries = metrics1.split('\n').filter((l) => l.startsWith('evit_batches_total{')).length;
  const hostileFailures = [...outcomes].flatMap(([kind, o]) => o.failed.map((f) => `${kind}: ${f}`));
  const result = {
    date: new Date().toISOString().slice(0, 10),
    machine: { cpu: cpuModel(), cores: os.cpus().length, node: process.version },
    model: `bundled fashion-mnist (${model.architecture.embedDim}-d, ${model.architecture.depth} blocks, ${model.imgSize} px)`,
    requests: { total: nGood + tasks.length, good: nGood, hostile: tasks.length, baseline },
    good: {
      wrong: wrong.length,
      errors: mixedErrors + (alone ? alone.errors + alone.timeouts + alone.non2xx : 0),
      alone: alone && { p50: quantile(aloneLatencies, 0.5), p99: quantile(aloneLatencies, 0.99), rps: baseline / (alone.duration || 1) },
      mixed: { p50: quantile(latencies, 0.5), p99: quantile(latencies, 0.99), max: Math.max(...latencies), rps: nGood / (goodMs / 1000) },
    },
    durationS: { good: goodMs / 1000, hostile: hostileMs / 1000 },
    hostile: [...outcomes].map(([kind, o]) => ({ kind, count: o.count, failed: o.failed.length })),
    server: {
      allocator: env.MALLOC_ARENA_MAX ? `glibc, MALLOC_ARENA_MAX=${env.MALLOC_ARENA_MAX}` : env.LD_PRELOAD ? `LD_PRELOAD=${env.LD_PRELOAD}` : 'glibc malloc, defaults',
      rssFreshMiB: rssFresh,
      rssStartMiB: rssStart,
      rssHalfMiB: rssHalf[0],
      rssPeakMiB: peak,
      rssEndMiB: rssEnd,
      idle: idle !== null,
      exitCode: exit.code,
      eventLoopP99Ms: histogramQuantile(metrics1, 'evit_event_loop_delay_seconds', 0.99) * 1000,
      metricsLines: { start: evitLines(metrics0), end: evitLines(metrics1) },
      keepRateSeries: keepSeries,
    },
    failures: [...wrong, ...hostileFailures],
  };
  // Bounded means: within a few times the p99 of the same requests alone, whatever the machine.
  const p99Bound = Math.max(250, 4 * (result.good.alone?.p99 ?? 60));
  result.checks = {
    'every good answer correct (logits within 1e-4 of the library\'s, top classes, keep rate)': wrong.length === 0 && result.good.errors === 0,
    'every hostile request answered as expected': hostileFailures.length === 0,
    [`p99 of good requests under the mix < ${fmt(p99Bound, 0)} ms (4 x alone, at least 250)`]: result.good.mixed.p99 < p99Bound,
    'idle afterwards (nothing queued, decoding or waiting)': idle !== null,
    // A leak grows as much in the second half as in the first; peaks held by the allocator do not.
    [`RSS: the second half adds under half what the first did (or under ${growthMiB} MiB)`]: rssEnd - rssHalf[0] < Math.max(growthMiB, (rssHalf[0] - rssStart) / 2),
    'RSS at the end within 200 MiB of the loaded server\'s': rssEnd - rssFresh < 200,
    'bounded /metrics (at most 21 keep_rate series)': keepSeries <= 21,
    'exits 0 on SIGTERM': exit.code === 0,
  };
  result.ok = Object.values(result.checks).every(Boolean);
  return result;
}

function markdown(r) {
  const lines = [
    `Soak run of ${r.date}: \`npm run soak\` (\`node bench/soak.js\`), ${r.requests.total.toLocaleString('en')} mixed requests`,
    `(${r.requests.good.toLocaleString('en')} good, ${r.requests.hostile.toLocaleString('en')} hostile) after a warm-up (200 good, one of each hostile kind) and ${r.requests.baseline.toLocaleString('en')} good ones alone, against one \`evit serve\``,
    `process (${r.model}, \`--request-timeout-ms ${REQUEST_TIMEOUT_MS}\`) on ${r.machine.cpu}, ${r.machine.cores} cores, Node ${r.machine.node}.`,
    'Good requests come from autocannon on 16 keep-alive connections; hostile ones from 6 more clients at the same time.',
    '',
    table(['good requests', 'p50 ms', 'p99 ms', 'req/s', 'wrong answers'], [
      ['alone', fmt(r.good.alone?.p50, 0), fmt(r.good.alone?.p99, 0), fmt(r.good.alone?.rps, 0), ''],
      ['beside the hostile ones', fmt(r.good.mixed.p50, 0), fmt(r.good.mixed.p99, 0), fmt(r.good.mixed.rps, 0), String(r.good.wrong + r.good.errors)],
    ]),
    '',
    table(['hostile request', 'sent', 'not answered as expected'], r.hostile.map((h) => [h.kind, String(h.count), String(h.failed)])),
    '',
    table(['server', 'value'], [
      [`resident memory (${r.server.allocator}): loaded / after warm-up / after the first half / end / peak`, `${fmt(r.server.rssFreshMiB, 0)} / ${fmt(r.server.rssStartMiB, 0)} / ${fmt(r.server.rssHalfMiB, 0)} / ${fmt(r.server.rssEndMiB, 0)} / ${fmt(r.server.rssPeakMiB, 0)} MiB`],
      ['event-loop delay p99 (evit_event_loop_delay_seconds)', `≤ ${fmt(r.server.eventLoopP99Ms, 0)} ms`],
      ['/metrics evit_ lines: start / end', `${r.server.metricsLines.start} / ${r.server.metricsLines.end}`],
      ['evit_batches_total series', String(r.server.keepRateSeries)],
      ['idle afterwards, exit code on SIGTERM', `${r.server.idle ? 'yes' : 'no'}, ${r.server.exitCode}`],
    ]),
    '',
    ...Object.entries(r.checks).map(([k, v]) => `- ${v ? 'pass' : '**FAIL**'}: ${k}`),
  ];
  return lines.join('\n');
}

async function main() {
  const argv = process.argv.slice(2);
  const opt = (name, dflt) => { const i = argv.indexOf(`--${name}`); return i >= 0 ? Number(argv[i + 1]) : dflt; };
  const result = await soak({
    requests: opt('requests', 10_000),
    hostileShare: opt('hostile-share', 0.3),
    baseline: opt('baseline', 1000),
    seed: opt('seed', 15),
    log: (m) => process.stderr.write(`soak: ${m}\n`),
  });
  if (argv.includes('--json')) process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  else process.stdout.write(`${markdown(result)}\n`);
  if (result.failures.length) process.stderr.write(`soak: ${result.failures.length} failures, the first:\n  ${result.failures.slice(0, 20).join('\n  ')}\n`);
  if (argv.includes('--write')) {
    writeBlock(SERVING_DOC, 'soak', markdown(result));
    process.stderr.write(`soak: wrote ${path.relative(ROOT, SERVING_DOC)}\n`);
  }
  process.exitCode = result.ok ? 0 : 1;
}

if (require.main === module) main().catch((err) => { console.error(err); process.exit(1); });

module.exports = { soak, markdown };
