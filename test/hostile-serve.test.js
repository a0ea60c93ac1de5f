'use strict';
// The HTTP server against hostile and careless clients: images that are cheap to send and costly to
// decode are refused from their headers or decoded one large request at a time, so a normal request
// is served promptly beside them; a client that hangs up stops its work; JSON nested millions deep is
// refused before it is parsed; slow clients get their 408 when the server said, in its JSON error
// format; --max-batch beyond one native call is refused at start-up; client-chosen keep rates do not
// grow /metrics; readiness says when the queue is full. Every hostile input is generated here.
const test = require('tape');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const zlib = require('node:zlib');
const { spawn, spawnSync } = require('node:child_process');
const sharp = require('sharp');
const evit = require('../dist');
const { tinyModel, tinyOptions } = require('./helpers/fixtures');
const { noisePng, request, post, until, metric } = require('./helpers/serve');
const { writeRandomCheckpoint } = require('./helpers/randomCheckpoint');

const { loadModel, createServer, Batcher, AbortedError } = evit;
const CLI = path.join(__dirname, '..', 'dist', 'cli.js');
const ATOL = 1e-4;

let model;
test('setup', async (t) => {
  sharp.cache(false);
  model = await loadModel(tinyModel, tinyOptions);
  t.ok(model, 'tiny fixture loaded');
});

async function start(options = {}) {
  const app = createServer({ model, ...options });
  const base = await app.listen({ host: '127.0.0.1', port: 0 });
  return { app, base };
}

const health = async (base) => (await request(base, { method: 'GET', path: '/healthz' })).body;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const closeTo = (a, b) => a.length === b.length && a.every((v, i) => Math.abs(v - b[i]) <= ATOL);

/** A real greyscale PNG of width × height, every row present (mid-grey): what the issue sent. */
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
  for (let y = 0; y < height; y++) rows[y * (width + 1)] = 0; // filter: none
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr), chunk('IDAT', zlib.deflateSync(rows, { level: 9 })), chunk('IEND', Buffer.alloc(0)),
  ]);
}

/** An interlaced RGB PNG of side × side: decoded whole, about 70 ms for 2000 × 2000 here. */
function largePng(side, seed = 0) {
  const raw = Buffer.alloc(side * side * 3);
  for (let y = 0; y < side; y++) for (let x = 0; x < side; x++) {
    const i = (y * side + x) * 3;
    raw[i] = (x + y + seed) & 255;
    raw[i + 1] = x & 255;
    raw[i + 2] = y & 255;
  }
  return sharp(raw, { raw: { width: side, height: side, channels: 3 } }).png({ compressionLevel: 6, progressive: true }).toBuffer();
}

/** Sends a request on a socket of its own and gives back a handle to read or abandon it. */
function rawRequest(base, { path: p = '/v1/classify', headers, body }) {
  const req = http.request(new URL(p, base), { method: 'POST', headers, agent: false });
  const h = { req, answered: false };
  h.response = new Promise((resolve) => {
    req.on('response', (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => { h.answered = true; resolve({ status: res.statusCode, text: Buffer.concat(chunks).toString() }); });
      res.on('error', () => resolve(null));
    });
    req.on('error', () => resolve(null));
  });
  req.end(body);
  return h;
}

test('the issue\'s thin PNGs are refused at once, and a normal request beside four of them is served promptly', async (t) => {
  const { app, base } = await start();
  const thin = greyPng(1, 40_000_000);
  const wide = greyPng(40_000_000, 1);
  const needle = greyPng(1, 4_000_000);
  t.ok(thin.length < 100_000 && needle.length < 10_000, `1 x 40,000,000: ${thin.length} bytes; 1 x 4,000,000: ${needle.length} bytes`);
  for (const [what, png] of [['1 x 40,000,000 PNG', thin], ['40,000,000 x 1 PNG', wide]]) {
    const t0 = performance.now();
    const r = await post(base, 'image/png', png);
    const ms = performance.now() - t0;
    t.ok(r.status >= 400 && r.status < 500 && ['EVIT_BAD_INPUT', 'EVIT_IMAGE_TOO_LARGE'].includes(r.body.error.code),
      `${what}: ${r.status} ${r.body.error.code} (${r.body.error.message})`);
    t.ok(ms < 1000, `${what}: answered in ${ms.toFixed(0)} ms`);
  }
  const normal = await noisePng(3, 300, 200);
  const [alone] = await model.classify(normal);
  const hostile = [1, 2, 3, 4].map(() => post(base, 'image/png', needle));
  const t0 = performance.now();
  const r = await post(base, 'image/png', normal);
  const ms = performance.now() - t0;
  t.ok(r.status === 200 && closeTo(r.body.results[0].logits, alone.logits), 'the normal request: 200 with its own result');
  t.ok(ms < 1000, `the normal request answered in ${ms.toFixed(0)} ms beside four 1 x 4,000,000 PNGs`);
  const four = await Promise.all(hostile);
  t.ok(four.every((x) => x.status === 400 && /aspect ratio/.test(x.body.error.message)), `the four: ${four.map((x) => x.status).join(', ')}, aspect ratio beyond 64:1`);
  await app.close();
});

test('large images decode one request at a time, and a small request never waits behind them', async (t) => {
  const { app, base } = await start({ largeImagePixels: 1_000_000, bodyLimit: 32 << 20 });
  const big = await largePng(2000);
  const small = await noisePng(5, 64, 48);
  const [aloneBig] = await model.classify(big);
  const [aloneSmall] = await model.classify(small);
  let most = 0;
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      most = Math.max(most, (await health(base)).largeDecodes ?? Infinity);
      await sleep(5);
    }
  })();
  const answered = [];
  const bigs = Array.from({ length: 8 }, (_, i) => post(base, 'image/png', big).then((r) => { answered.push(i); return r; }));
  await until('large requests to wait for the lane', async () => (await health(base)).largeWaiting >= 4, 10_000);
  const t0 = performance.now();
  const r = await post(base, 'image/png', small);
  const ms = performance.now() - t0;
  const pending = 8 - answered.length;
  t.ok(r.status === 200 && closeTo(r.body.results[0].logits, aloneSmall.logits), 'the small request: 200 with its own result');
  t.ok(pending >= 3, `the small request was answered in ${ms.toFixed(0)} ms, while ${pending} of the 8 large ones were still waiting or decoding`);
  const rs = await Promise.all(bigs);
  sampling = false;
  await sampler;
  t.ok(rs.every((x) => x.status === 200 && closeTo(x.body.results[0].logits, aloneBig.logits)), 'every large request: 200 with its own result');
  t.equal(most, 1, 'never more than one large request decoding at once');
  await app.close();

  // A full lane refuses more, as a full queue does.
  const s = await start({ largeImagePixels: 1_000_000, largeQueue: 2, bodyLimit: 32 << 20 });
  const six = await Promise.all(Array.from({ length: 6 }, () => post(s.base, 'image/png', big)));
  const refused = six.filter((x) => x.status === 429);
  t.ok(refused.length >= 1 && refused.every((x) => x.body.error.code === 'EVIT_OVERLOADED' && x.headers['retry-after'] === '1'),
    `with 2 places to wait, ${refused.length} of 6 concurrent large requests got 429 EVIT_OVERLOADED with Retry-After (${refused[0]?.body.error.message})`);
  t.ok(six.every((x) => x.status === 429 || (x.status === 200 && closeTo(x.body.results[0].logits, aloneBig.logits))), 'the others: 200 with their result');
  await s.app.close();
});

test('a client that hangs up stops its work: it leaves the large lane, and its images not yet decoded are not decoded', async (t) => {
  const { app, base } = await start({ largeImagePixels: 1_000_000, bodyLimit: 32 << 20 });
  const big = await largePng(1500, 7);
  const n = 8;
  // Triton's binary form: a BYTES tensor of n large images after the JSON header.
  const header = Buffer.from(JSON.stringify({ inputs: [{ name: 'image', shape: [n], datatype: 'BYTES', parameters: { binary_data_size: n * (4 + big.length) } }] }));
  const len = Buffer.alloc(4);
  len.writeUInt32LE(big.length);
  const body = Buffer.concat([header, ...Array.from({ length: n }, () => [len, big]).flat()]);
  const headers = { 'content-type': 'application/octet-stream', 'inference-header-content-length': String(header.length) };
  const t0 = performance.now();
  const whole = await rawRequest(base, { path: '/v2/models/evit/infer', headers, body }).response;
  const fullMs = performance.now() - t0;
  t.equal(whole.status, 200, `${n} large images in one request: 200 in ${fullMs.toFixed(0)} ms`);

  const holder = rawRequest(base, { path: '/v2/models/evit/infer', headers, body });
  await until('the request of many images to hold the lane', async () => (await health(base)).largeDecodes === 1, 10_000);
  const waiting = [1, 2, 3].map(() => rawRequest(base, { headers: { 'content-type': 'image/png' }, body: big }));
  await until('three requests to wait for the lane', async () => (await health(base)).largeWaiting === 3, 10_000);
  for (const w of waiting) w.req.destroy();
  await until('the three to leave the lane', async () => (await health(base)).largeWaiting === 0, 10_000);
  t.notOk(holder.answered, 'three clients that hung up left the lane while the request ahead of them still decoded');
  const t1 = performance.now();
  holder.req.destroy();
  await until('the abandoned request to stop decoding', async () => (await health(base)).largeDecodes === 0, 10_000);
  const stopMs = performance.now() - t1;
  t.ok(stopMs < fullMs / 2, `its client gone, the request of ${n} images stopped decoding in ${stopMs.toFixed(0)} ms (all ${n} take ${fullMs.toFixed(0)} ms)`);
  const small = await noisePng(9);
  t.equal((await post(base, 'image/png', small)).status, 200, 'the server serves the next request');
  const m = (await request(base, { method: 'GET', path: '/metrics' })).text;
  t.equal(metric(m, 'evit_images_total'), n + 1, `only the answered requests' images were classified (${n} + 1)`);
  t.equal(metric(m, 'evit_large_decodes_waiting'), 0, 'evit_large_decodes_waiting 0');
  await app.close();
});

test('Batcher.classify stops decoding when its signal fires, and takes the decode limits it is given', async (t) => {
  const batcher = new Batcher(model);
  const big = await largePng(1500, 3);
  const images = Array(6).fill(big);
  const t0 = performance.now();
  const out = await batcher.classify(images, { decode: { concurrency: 1 } });
  const fullMs = performance.now() - t0;
  t.equal(out.results.length, 6, `6 images one at a time: ${fullMs.toFixed(0)} ms`);
  const ac = new AbortController();
  const t1 = performance.now();
  const p = batcher.classify(images, { signal: ac.signal, decode: { concurrency: 1 } });
  setTimeout(() => ac.abort(new Error('gone')), 10);
  try {
    await p;
    t.fail('classified');
  } catch (err) {
    t.ok(err instanceof AbortedError, `${err.name}: ${err.message}`);
  }
  const ms = performance.now() - t1;
  t.ok(ms < fullMs / 2, `aborted after 10 ms, it settled in ${ms.toFixed(0)} ms`);
  try {
    await batcher.classify(await noisePng(1, 300, 200), { decode: { maxPixels: 1000 } });
    t.fail('decoded');
  } catch (err) {
    t.match(err.message, /over the decode limit of 1000 pixels/, `decode.maxPixels applies: ${err.message}`);
  }
  await batcher.close();
});

test('a request holding NaN or infinity fails alone instead of failing the batch it would join', async (t) => {
  // Nothing runs until drain(): all three requests are certainly in one batch.
  const batcher = new Batcher(model, { maxBatchSize: 64, maxWaitMs: 60_000 });
  const per = 3 * 224 * 224;
  const good = (v) => ({ data: new Float32Array(per).fill(v), shape: [1, 3, 224, 224] });
  const poisoned = good(0.1);
  poisoned.data[1234] = NaN;
  const infinite = { data: new Float32Array(2 * per).fill(0.2), shape: [2, 3, 224, 224] };
  infinite.data[per + 7] = -Infinity;
  const calls = [batcher.forward(good(0.3)), batcher.forward(poisoned), batcher.forward(infinite), batcher.forward(good(-0.3))].map((p) => p.then((r) => r, (e) => e));
  batcher.drain();
  const [a, nan, inf, b] = await Promise.all(calls);
  t.ok(nan instanceof evit.InputError && /input image 0 holds a non-finite value \(NaN at element 1234\)/.test(nan.message), `NaN: ${nan.message}`);
  t.ok(inf instanceof evit.InputError && /input image 1 holds a non-finite value \(-Infinity at element 7\)/.test(inf.message), `-Infinity: ${inf.message}`);
  const alone = async (v) => (await model.forward(good(v))).logits;
  t.ok(!(a instanceof Error) && closeTo(Array.from(a.logits), Array.from(await alone(0.3))), 'the good request before them: its own result');
  t.ok(!(b instanceof Error) && closeTo(Array.from(b.logits), Array.from(await alone(-0.3))), 'and the one after');
  t.equal(a.batchSize, 2, 'the two good requests shared one pass');
  await batcher.close();
});

test('finite input whose forward pass overflows float32 is a 400, not a 200 with null logits', async (t) => {
  const { app, base } = await start();
  const huge = new Float32Array(3 * 224 * 224).fill(3e38);
  huge[5] = -3e38;
  const npy = evit.serializeNpy(huge, [1, 3, 224, 224]);
  const v1 = await post(base, 'application/x-npy', npy);
  t.ok(v1.status === 400 && v1.body.error.code === 'EVIT_BAD_INPUT' && /not finite/.test(v1.body.error.message), `v1: ${v1.status} ${v1.body.error?.code} (${v1.body.error?.message})`);
  const raw = Buffer.from(huge.buffer);
  const header = Buffer.from(JSON.stringify({ inputs: [{ name: 'input', shape: [1, 3, 224, 224], datatype: 'FP32', parameters: { binary_data_size: raw.length } }] }));
  const v2 = await request(base, { path: '/v2/models/evit/infer', headers: { 'content-type': 'application/octet-stream', 'inference-header-content-length': String(header.length) }, body: Buffer.concat([header, raw]) });
  t.ok(v2.status === 400 && v2.body.code === 'EVIT_BAD_INPUT' && /not finite/.test(v2.body.error), `v2: ${v2.status} ${v2.body.code} (${v2.body.error})`);
  await app.close();
});

test('JSON nested 5 million deep is refused before it is parsed, on /v1 and /v2, in bounded time and memory', async (t) => {
  const { app, base } = await start();
  const deep = Buffer.from('['.repeat(5_000_000) + ']'.repeat(5_000_000));
  t.equal(deep.length, 10_000_000, 'a 10 MB body, under the 10 MiB limit');
  const inObject = Buffer.from(`{"image": ${'{"a":'.repeat(1_000_000)}1${'}'.repeat(1_000_000)}}`);
  global.gc?.();
  const rss0 = process.memoryUsage().rss;
  let slowest = 0;
  for (let i = 0; i < 5; i++) {
    for (const [what, p, body] of [['/v1/classify', '/v1/classify', deep], ['/v1/classify, inside an object', '/v1/classify', inObject], ['/v2 infer', '/v2/models/evit/infer', deep]]) {
      const t0 = performance.now();
      const r = await request(base, { path: p, headers: { 'content-type': 'application/json' }, body });
      const ms = performance.now() - t0;
      slowest = Math.max(slowest, ms);
      const code = p === '/v1/classify' ? r.body?.error?.code : r.body?.code;
      const message = p === '/v1/classify' ? r.body?.error?.message : r.body?.error;
      if (i === 0) t.ok(r.status === 400 && code === 'EVIT_BAD_REQUEST' && /nested deeper than 16 levels/.test(message), `${what}: ${r.status} ${code} (${message})`);
    }
  }
  const grew = (process.memoryUsage().rss - rss0) / 2 ** 20;
  t.ok(slowest < 1000, `the slowest of 15 answers took ${slowest.toFixed(0)} ms`);
  t.ok(grew < 300, `resident memory grew ${grew.toFixed(0)} MiB over 15 bodies of 10 MB`);
  // What the API does need still parses: a v2 FP32 tensor nested [1][3][224][224].
  const nested = Array.from({ length: 1 }, () => Array.from({ length: 3 }, () => Array.from({ length: 224 }, () => new Array(224).fill(0.25))));
  const ok = await request(base, { path: '/v2/models/evit/infer', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ inputs: [{ name: 'input', shape: [1, 3, 224, 224], datatype: 'FP32', data: nested }] }) });
  t.equal(ok.status, 200, 'a nested [1][3][224][224] FP32 tensor: 200');
  await app.close();
});

/** Opens a raw connection, sends `head`, then `trickle` one byte every `everyMs`; resolves what the server answered and when. */
function slowClient(port, head, trickle = '', everyMs = 100) {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const sock = net.connect(port, '127.0.0.1');
    let text = '';
    let at = null;
    let i = 0;
    const timer = setInterval(() => { if (i < trickle.length && !sock.destroyed) sock.write(trickle[i++]); }, everyMs);
    // The test's own limit: past it, the server did not answer in time.
    const guard = setTimeout(() => sock.destroy(), 8000);
    sock.on('data', (d) => { at ??= performance.now() - t0; text += d.toString('latin1'); });
    sock.on('error', () => {});
    sock.on('close', () => {
      clearInterval(timer);
      clearTimeout(guard);
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0);
      const bodyText = text.split('\r\n\r\n')[1] ?? '';
      let body = null;
      try { body = JSON.parse(bodyText); } catch { /* not JSON */ }
      resolve({ status, body, ms: at ?? performance.now() - t0, text });
    });
    sock.write(head);
  });
}

test('a slow client gets its 408 when the server said, in the server\'s JSON error format', async (t) => {
  const timeout = 1500;
  const { app, base } = await start({ requestTimeoutMs: timeout });
  const port = Number(new URL(base).port);
  const cases = [
    ['a body that stops halfway', 'POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 5000\r\n\r\n' + 'x'.repeat(100), ''],
    ['a body sent a byte at a time', 'POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 5000\r\n\r\n', 'y'.repeat(100)],
    ['headers sent a byte at a time (slowloris)', 'POST /v1/classify HTTP/1.1\r\nHost: x\r\n', 'X-Slow: ' + 'z'.repeat(100)],
    ['headers that never end, on /v2', 'POST /v2/models/evit/infer HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n', ''],
  ];
  const answers = await Promise.all(cases.map(([, head, trickle]) => slowClient(port, head, trickle)));
  cases.forEach(([what], i) => {
    const a = answers[i];
    t.ok(a.status === 408 && a.body?.error?.code === 'EVIT_REQUEST_TIMEOUT' && new RegExp(`within ${timeout} ms`).test(a.body.error.message),
      `${what}: ${a.status} ${JSON.stringify(a.body ?? a.text.slice(0, 80))}`);
    t.ok(a.ms >= timeout - 50 && a.ms < timeout + 700, `${what}: answered after ${a.ms.toFixed(0)} ms (timeout ${timeout})`);
  });
  const big = await slowClient(port, `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'b'.repeat(20_000)}\r\n\r\n`);
  t.ok(big.status === 431 && big.body?.error?.code === 'EVIT_HEADERS_TOO_LARGE', `oversized headers: ${big.status} ${JSON.stringify(big.body)}`);
  const garbage = await slowClient(port, 'NOT HTTP AT ALL\r\n\r\n');
  t.ok(garbage.status === 400 && garbage.body?.error?.code === 'EVIT_BAD_REQUEST', `a malformed request: ${garbage.status} ${JSON.stringify(garbage.body)}`);
  t.equal((await health(base)).status, 'ok', 'the server keeps serving');
  await app.close();
  t.throws(() => createServer({ model, requestTimeoutMs: 0 }), /requestTimeoutMs must be a positive integer, got 0/, 'requestTimeoutMs 0 is refused');
});

test('a body over the limit: the 413 reaches a client still sending it, and the connection stays usable', async (t) => {
  const limit = 1 << 20;
  const { app, base } = await start({ bodyLimit: limit });
  const port = Number(new URL(base).port);
  const exchange = (declared, sendAll) => new Promise((resolve) => {
    const sock = net.connect(port, '127.0.0.1');
    let text = '';
    let writeError = null;
    sock.on('data', (d) => { text += d.toString('latin1'); });
    sock.on('error', (e) => { writeError = e.code; });
    const ended = new Promise((r) => sock.on('close', r));
    sock.write(`POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: ${declared}\r\n\r\n`);
    sock.write(Buffer.alloc(64 << 10));
    (async () => {
      await until('the 413', () => text.includes('EVIT_BODY_TOO_LARGE'), 5000).catch(() => {});
      if (sendAll) {
        // The rest of the body, after the answer, as a client that does not read while it writes.
        for (let sent = 64 << 10; sent < declared && !sock.destroyed; sent += 64 << 10) sock.write(Buffer.alloc(Math.min(64 << 10, declared - sent)));
        sock.write('GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
      }
      setTimeout(() => sock.destroy(), 3000);
      await ended;
      resolve({ statuses: [...text.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => Number(m[1])), writeError });
    })();
  });
  const within = await exchange(limit + (limit >> 1), true);
  t.deepEqual(within, { statuses: [413, 200], writeError: null }, 'a declared 1.5 MiB body: 413, the rest is read and dropped, then the next request on the connection is answered');
  const beyond = await exchange(100 * limit, false);
  t.deepEqual(beyond.statuses, [413], 'a declared 100 MiB body: 413, and the connection is closed rather than read');
  await app.close();
});

function startCli(args) {
  const child = spawn(process.execPath, [CLI, 'serve', '--weights', tinyModel, '--heads', '3', '--port', '0', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (c) => { stderr += c; });
  const exited = new Promise((resolve) => child.on('exit', resolve));
  return { child, exited, address: until('serving', () => /serving on/.test(stderr)).then(() => /serving on (http:\/\/\S+)/.exec(stderr)[1]) };
}

test('evit serve --request-timeout-ms: the 408 arrives at that time', async (t) => {
  const s = startCli(['--request-timeout-ms', '1000']);
  const base = await s.address;
  const a = await slowClient(Number(new URL(base).port), 'POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 999\r\n\r\nabc');
  t.ok(a.status === 408 && a.body?.error?.code === 'EVIT_REQUEST_TIMEOUT', `408 ${JSON.stringify(a.body)}`);
  t.ok(a.ms >= 950 && a.ms < 1700, `after ${a.ms.toFixed(0)} ms`);
  s.child.kill('SIGTERM');
  t.equal(await s.exited, 0, 'exits 0');
});

test('--max-batch beyond what one native call takes is refused at start-up, before listening or loading', (t) => {
  const { maxBatch } = evit.backendInfo().limits;
  for (const [cmd, extra] of [['serve', ['--port', '0']], ['worker', ['--queue', 'q', '--redis', 'redis://127.0.0.1:1']]]) {
    for (const value of [String(maxBatch + 1), '0']) {
      const r = spawnSync(process.execPath, [CLI, cmd, '--weights', tinyModel, '--heads', '3', ...extra, '--max-batch', value], { encoding: 'utf8', timeout: 20_000 });
      t.equal(r.status, 2, `${cmd} --max-batch ${value}: exit 2`);
      t.match(r.stderr, new RegExp(`--max-batch must be an integer from 1 to ${maxBatch}, got ${value}`), `${cmd}: ${r.stderr.trim()}`);
      t.doesNotMatch(r.stderr, /listening|loading|taking jobs/, `${cmd}: nothing listened or loaded first`);
    }
  }
  for (const [flag, value] of [['--request-timeout-ms', '0'], ['--large-decodes', '0'], ['--large-image-pixels', '-5']]) {
    const r = spawnSync(process.execPath, [CLI, 'serve', '--weights', tinyModel, '--heads', '3', '--port', '0', `${flag}=${value}`], { encoding: 'utf8', timeout: 20_000 });
    t.ok(r.status === 2 && new RegExp(`${flag} must be a positive integer`).test(r.stderr), `${flag} ${value}: exit ${r.status}, ${r.stderr.trim()}`);
  }
  t.end();
});

test('4,000 requests at 4,000 distinct keep rates leave /metrics the size it was', async (t) => {
  // A model of random weights, 32 x 32 px, so 4,000 forward passes take a few seconds.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'evit-hostile-serve-'));
  const file = path.join(dir, 'small.safetensors');
  writeRandomCheckpoint(file, { embed: 16, depth: 12, mlp: 32, classes: 10, patch: 8, grid: 4, inChans: 1 });
  const small = await loadModel(file, { numHeads: 2 });
  const app = createServer({ model: small, batch: { maxWaitMs: 0, maxQueue: 1024 } });
  const base = await app.listen({ host: '127.0.0.1', port: 0 });
  const npy = evit.serializeNpy(new Float32Array(32 * 32).fill(0.1), [1, 1, 32, 32]);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
  const one = (keepRate) => new Promise((resolve, reject) => {
    const req = http.request(new URL(`/v1/classify?keepRate=${keepRate}`, base), { method: 'POST', agent, headers: { 'content-type': 'application/x-npy' } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
    });
    req.on('error', reject);
    req.end(npy);
  });
  const lines = async () => (await request(base, { method: 'GET', path: '/metrics' })).text.split('\n').filter((l) => l.startsWith('evit_')).length;
  const rates = Array.from({ length: 4000 }, (_, i) => 0.3 + (0.7 * (i + 1)) / 4001);
  let next = 0;
  const statuses = new Map();
  const run = async (upTo) => {
    await Promise.all(Array.from({ length: 16 }, async () => {
      while (next < upTo) {
        const s = await one(rates[next++]);
        statuses.set(s, (statuses.get(s) ?? 0) + 1);
      }
    }));
  };
  await run(100);
  const after100 = await lines();
  await run(4000);
  const after4000 = await lines();
  t.deepEqual([...statuses], [[200, 4000]], 'all 4,000 answered 200');
  t.equal(after4000, after100, `/metrics has ${after4000} evit_ lines after 4,000 requests, as after the first 100`);
  const m = (await request(base, { method: 'GET', path: '/metrics' })).text;
  const series = m.split('\n').filter((l) => l.startsWith('evit_batches_total{'));
  t.equal(series.reduce((sum, l) => sum + Number(l.split(' ')[1]), 0), 4000, `every pass counted, in ${series.length} keep_rate series`);
  agent.destroy();
  await app.close();
  small.dispose();
  fs.rmSync(dir, { recursive: true, force: true });
});

test('readiness and /healthz say when the batch queue is full; they recover when it drains', async (t) => {
  const batcher = new Batcher(model, { maxBatchSize: 1000, maxWaitMs: 60_000, maxQueue: 3 });
  const { app, base } = await start({ batcher });
  const pngs = await Promise.all([1, 2, 3].map((s) => noisePng(s)));
  const queued = pngs.map((p) => post(base, 'image/png', p));
  await until('a full queue', () => batcher.queued === 3);
  const ready = await request(base, { method: 'GET', path: '/v2/health/ready' });
  t.deepEqual([ready.status, ready.body], [400, { ready: false }], 'v2 ready: 400 while a new request would get 429');
  const h = await request(base, { method: 'GET', path: '/healthz' });
  t.ok(h.status === 503 && h.body.status === 'overloaded' && h.body.queued === 3 && h.body.maxQueue === 3, `healthz: ${h.status} ${JSON.stringify(h.body)}`);
  t.equal((await request(base, { method: 'GET', path: '/v2/health/live' })).status, 200, 'still live');
  batcher.drain();
  t.deepEqual((await Promise.all(queued)).map((r) => r.status), [200, 200, 200], 'the queued requests are answered');
  t.equal((await request(base, { method: 'GET', path: '/v2/health/ready' })).status, 200, 'ready again');
  t.equal((await health(base)).status, 'ok', 'healthz ok again');
  await batcher.close();
  await app.close();
});

test('number options are plain decimals: "0x1" is refused, not read as 1', async (t) => {
  const { app, base } = await start();
  const png = await noisePng(8);
  const b64 = png.toString('base64');
  const v2 = (keep) => request(base, { path: '/v2/models/evit/infer', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ parameters: { keep_rate: keep }, inputs: [{ name: 'image', shape: [1], datatype: 'BYTES', data: [b64] }] }) });
  for (const [what, send] of [
    ['?keepRate=0x1', () => post(base, 'image/png', png, '/v1/classify?keepRate=0x1')],
    ['?top=0x3', () => post(base, 'image/png', png, '/v1/classify?top=0x3')],
    ['?keepRate=Infinity', () => post(base, 'image/png', png, '/v1/classify?keepRate=Infinity')],
    ['JSON "keepRate": "0x1"', () => post(base, 'application/json', JSON.stringify({ image: b64, keepRate: '0x1' }))],
    ['v2 "keep_rate": "0b1"', () => v2('0b1')],
  ]) {
    const r = await send();
    const code = r.body?.error?.code ?? r.body?.code;
    t.ok(r.status === 400 && code === 'EVIT_BAD_OPTIONS', `${what}: ${r.status} ${code} (${r.body?.error?.message ?? r.body?.error})`);
  }
  const ok = await post(base, 'image/png', png, '/v1/classify?keepRate=%200.5%20&top=3');
  t.ok(ok.status === 200 && ok.body.keepRate === 0.5 && ok.body.results[0].top.length === 3, 'a decimal with spaces around it is read: keepRate 0.5, top 3');
  await app.close();
});

test('teardown', (t) => {
  model.dispose();
  t.end();
});
