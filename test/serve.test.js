'use strict';
// The HTTP server over loopback: concurrent requests get their own results, overload and
// shutdown answer 429/503, client aborts leave the queue, and every bad input is a 4xx JSON
// error while the server keeps serving.
const test = require('tape');
const Fastify = require('fastify');
const sharp = require('sharp');
const evit = require('../dist');
const { tinyModel, tinyOptions } = require('./helpers/fixtures');
const { mulberry32, uniform } = require('./helpers/reference');
const { noisePng, pngClaiming, request, post, until, metric, badPrometheusLines } = require('./helpers/serve');

const { loadModel, createServer, evitPlugin, Batcher, serializeNpy } = evit;
const ATOL = 1e-4; // SPEC §4

let model;
test('setup', async (t) => {
  model = await loadModel(tinyModel, tinyOptions);
  t.ok(model, 'tiny fixture loaded');
});

async function start(options) {
  const app = createServer({ model, ...options });
  const base = await app.listen({ host: '127.0.0.1', port: 0 });
  return { app, base };
}

const health = async (base) => (await request(base, { method: 'GET', path: '/healthz' })).body;

function closeTo(a, b) {
  return a.length === b.length && a.every((v, i) => Math.abs(v - b[i]) <= ATOL);
}

test('200 concurrent requests each get their own result, equal to classifying the image alone', async (t) => {
  const { app, base } = await start({ batch: { maxBatchSize: 16, maxWaitMs: 5 } });
  const t0 = await noisePng(1000);
  t.equal((await post(base, 'image/png', t0)).status, 200, 'warm-up request');
  const pngs = await Promise.all(Array.from({ length: 200 }, (_, i) => noisePng(i + 1)));
  const responses = await Promise.all(pngs.map((p) => post(base, 'image/png', p)));
  t.deepEqual([...new Set(responses.map((r) => r.status))], [200], 'all 200 answered 200');
  let same = 0;
  for (let i = 0; i < pngs.length; i++) {
    const [alone] = await model.classify(pngs[i], { top: 5 });
    const got = responses[i].body.results[0];
    if (closeTo(got.logits, alone.logits) && got.top.map((x) => x.index).join() === alone.top.map((x) => x.index).join()) same++;
  }
  t.equal(same, 200, 'every response carries its own image\'s logits and top 5');
  t.ok(responses.some((r) => r.body.batchSize > 1), `requests shared batches (largest ${Math.max(...responses.map((r) => r.body.batchSize))})`);
  t.ok(responses.every((r) => r.body.keepRate === 0.7 && r.headers['x-evit-keep-rate'] === '0.7'), 'each response names the keep rate that served it');
  const m = (await request(base, { method: 'GET', path: '/metrics' })).text;
  t.equal(metric(m, 'evit_http_requests_total{route="classify",code="200"}'), 201, 'metrics count the 201 requests');
  t.equal(metric(m, 'evit_images_total'), 201, 'and the images');
  t.equal(metric(m, 'evit_batch_size_sum'), 201, 'batch sizes add up to the images');
  t.equal(metric(m, 'evit_keep_rate'), 0.7, 'keep rate gauge');
  t.deepEqual(badPrometheusLines(m), [], 'every line of /metrics is Prometheus text format');
  t.ok(metric(m, 'process_resident_memory_bytes') > 0, 'resident memory reported');
  t.ok(metric(m, 'evit_queue_delay_seconds_count') === 201 && metric(m, 'evit_http_request_duration_seconds_count{route="classify"}') === 201, 'queue delay and latency histograms');
  await app.close();
});

test('a full queue answers 429 with Retry-After; queued requests still finish; the server keeps serving', async (t) => {
  // Nothing runs until the batcher is told to: the queue fills deterministically.
  const batcher = new Batcher(model, { maxBatchSize: 1000, maxWaitMs: 60_000, maxQueue: 3 });
  const { app, base } = await start({ batcher });
  const pngs = await Promise.all([1, 2, 3, 4, 5, 6].map((s) => noisePng(s)));
  const queued = pngs.slice(0, 3).map((p) => post(base, 'image/png', p));
  await until('three queued requests', () => batcher.queued === 3);
  const over = await Promise.all(pngs.slice(3).map((p) => post(base, 'image/png', p)));
  t.deepEqual(over.map((r) => r.status), [429, 429, 429], 'requests beyond the queue bound: 429');
  t.ok(over.every((r) => r.body.error.code === 'EVIT_OVERLOADED' && r.headers['retry-after'] === '1'), 'EVIT_OVERLOADED with Retry-After');
  t.equal((await health(base)).status, 'overloaded', 'healthz still answers while overloaded, and says so');
  batcher.drain();
  const done = await Promise.all(queued);
  t.deepEqual(done.map((r) => r.status), [200, 200, 200], 'the accepted requests finish');
  t.equal((await post(base, 'image/png', pngs[4])).status, 200, 'a request after the overload is served');
  await batcher.close();
  const after = await post(base, 'image/png', pngs[5]);
  t.equal(after.status, 503, 'a closed batcher answers 503');
  t.equal(after.body.error.code, 'EVIT_CLOSED', 'EVIT_CLOSED');
  await app.close();
});

test('a client that disconnects while queued leaves the queue', async (t) => {
  const batcher = new Batcher(model, { maxBatchSize: 1000, maxWaitMs: 60_000 });
  const { app, base } = await start({ batcher });
  const png = await noisePng(7);
  const http = require('node:http');
  const req = http.request(new URL('/v1/classify', base), { method: 'POST', headers: { 'content-type': 'image/png' }, agent: false });
  req.on('error', () => {});
  req.end(png);
  await until('the request to queue', () => batcher.queued === 1);
  req.destroy();
  await until('the aborted request to leave the queue', () => batcher.queued === 0);
  t.pass('queue emptied without running the request');
  const keep = post(base, 'image/png', png);
  await until('the next request to queue', () => batcher.queued === 1);
  batcher.drain();
  t.equal((await keep).status, 200, 'the next request is served');
  await batcher.close();
  await app.close();
});

test('graceful shutdown finishes every accepted request, including a body still uploading', async (t) => {
  // maxWaitMs is long so the requests are certainly still queued when close() starts.
  const { app, base } = await start({ batch: { maxBatchSize: 1000, maxWaitMs: 60_000 } });
  const pngs = await Promise.all([11, 12, 13, 14, 15, 16].map((s) => noisePng(s)));
  const queued = pngs.slice(0, 5).map((p) => post(base, 'image/png', p));
  await until('five queued requests', async () => (await health(base)).queued === 5);

  // A sixth request has sent its headers and half its body when shutdown begins.
  const http = require('node:http');
  const uploading = new Promise((resolve, reject) => {
    const req = http.request(new URL('/v1/classify', base), {
      method: 'POST', agent: false, headers: { 'content-type': 'image/png', 'content-length': pngs[5].length },
    }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, body: JSON.parse(Buffer.concat(chunks).toString()) }));
    });
    req.on('error', reject);
    req.write(pngs[5].subarray(0, 100));
    req.flushHeaders();
    setTimeout(() => app.close(), 50);
    setTimeout(() => req.end(pngs[5].subarray(100)), 300);
  });

  const results = await Promise.all([...queued, uploading]);
  t.deepEqual(results.map((r) => r.status), [200, 200, 200, 200, 200, 200], 'all six accepted requests answered 200');
  for (let i = 0; i < 6; i++) {
    const [alone] = await model.classify(pngs[i]);
    t.ok(closeTo(results[i].body.results[0].logits, alone.logits), `request ${i}: its own correct result`);
  }
  await app.close();
  const refused = await request(base, { method: 'GET', path: '/healthz' }).then(() => null, (err) => err.code);
  t.equal(refused, 'ECONNREFUSED', 'after close the port is closed');
});

test('a request arriving during shutdown gets 503 EVIT_CLOSED; the one before it finishes', async (t) => {
  const net = require('node:net');
  const png = await noisePng(21);
  const head = `POST /v1/classify HTTP/1.1\r\nHost: localhost\r\nContent-Type: image/png\r\nContent-Length: ${png.length}\r\n\r\n`;
  const servers = [
    ['evit serve\'s server', createServer({ model })],
    // With fastify's default return503OnClosing the host answers such requests itself (also 503).
    ['the plugin mounted in another server', Fastify({ return503OnClosing: false }).register(evitPlugin, { model })],
  ];
  for (const [what, app] of servers) {
    const { port } = new URL(await app.listen({ host: '127.0.0.1', port: 0 }));
    // New connections are refused once closing, so the late request is pipelined on a connection
    // whose first request is still uploading its body when shutdown begins.
    const sock = net.connect(Number(port), '127.0.0.1');
    let text = '';
    sock.on('data', (c) => { text += c.toString('latin1'); });
    const ended = new Promise((resolve) => sock.on('close', resolve));
    sock.write(head);
    sock.write(png.subarray(0, 100));
    await new Promise((r) => setTimeout(r, 100));
    const closing = app.close();
    await new Promise((r) => setTimeout(r, 50));
    sock.write(Buffer.concat([png.subarray(100), Buffer.from(head), png]));
    await ended;
    await closing;
    const statuses = [...text.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => Number(m[1]));
    t.deepEqual(statuses, [200, 503], `${what}: the accepted request 200, the late one 503`);
    t.ok(text.includes('"keepRate":0.7') && text.includes('"code":"EVIT_CLOSED"'), `${what}: a result, then EVIT_CLOSED`);
  }
});

test('every bad input is a 4xx JSON error and the server keeps serving', async (t) => {
  const { app, base } = await start({ bodyLimit: 1024 * 1024, maxPixels: 1_000_000 });
  const good = await noisePng(31, 120, 100);
  const jpeg = await sharp(good).jpeg().toBuffer();
  const webp = await sharp(good).webp().toBuffer();
  const gif = await sharp(good).gif().toBuffer();
  const rand = mulberry32(5);
  const tensor = uniform(rand, 3 * 224 * 224, -2, 2);
  const cases = [
    ['non-image bytes as image/png', 'image/png', Buffer.from('definitely not a picture'), 400, 'EVIT_BAD_INPUT'],
    ['empty body', 'image/jpeg', Buffer.alloc(0), 400, 'EVIT_BAD_INPUT'],
    ['truncated jpeg', 'image/jpeg', jpeg.subarray(0, Math.floor(jpeg.length * 0.6)), 400, 'EVIT_BAD_INPUT'],
    ['truncated png', 'image/png', good.subarray(0, Math.floor(good.length * 0.6)), 400, 'EVIT_BAD_INPUT'],
    ['truncated webp', 'image/webp', webp.subarray(0, Math.floor(webp.length * 0.6)), 400, 'EVIT_BAD_INPUT'],
    ['header claims 100000 x 100000 (decompression bomb)', 'image/png', await pngClaiming(100_000, 100_000), 413, 'EVIT_IMAGE_TOO_LARGE'],
    ['header claims 2000 x 1000, over maxPixels', 'image/png', await pngClaiming(2000, 1000), 413, 'EVIT_IMAGE_TOO_LARGE'],
    ['a real image over maxPixels', 'image/png', await sharp({ create: { width: 1200, height: 1000, channels: 3, background: '#000' } }).png().toBuffer(), 413, 'EVIT_IMAGE_TOO_LARGE'],
    ['text/plain', 'text/plain', Buffer.from('hello'), 415, 'EVIT_UNSUPPORTED_MEDIA_TYPE'],
    ['application/xml', 'application/xml', Buffer.from('<a/>'), 415, 'EVIT_UNSUPPORTED_MEDIA_TYPE'],
    ['image/gif content type', 'image/gif', gif, 415, 'EVIT_UNSUPPORTED_MEDIA_TYPE'],
    ['gif bytes sent as image/png', 'image/png', gif, 415, 'EVIT_UNSUPPORTED_MEDIA_TYPE'],
    ['no content type', null, good, 415, 'EVIT_UNSUPPORTED_MEDIA_TYPE'],
    ['body over the limit', 'image/png', Buffer.concat([good, Buffer.alloc(1024 * 1024)]), 413, 'EVIT_BODY_TOO_LARGE'],
    ['malformed JSON', 'application/json', Buffer.from('{"image": '), 400, 'EVIT_BAD_REQUEST'],
    ['JSON without image', 'application/json', Buffer.from('{"top": 3}'), 400, 'EVIT_BAD_INPUT'],
    ['JSON array', 'application/json', Buffer.from('[1, 2]'), 400, 'EVIT_BAD_INPUT'],
    ['JSON image not base64', 'application/json', Buffer.from('{"image": "**not base64**"}'), 400, 'EVIT_BAD_INPUT'],
    ['JSON with both image and npy', 'application/json', Buffer.from(JSON.stringify({ image: good.toString('base64'), npy: 'AAAA' })), 400, 'EVIT_BAD_INPUT'],
    ['JSON base64 of non-image', 'application/json', Buffer.from(JSON.stringify({ image: Buffer.from('nope').toString('base64') })), 400, 'EVIT_BAD_INPUT'],
    ['npy of the wrong image size', 'application/x-npy', serializeNpy(new Float32Array(3 * 8 * 8), [1, 3, 8, 8]), 400, 'EVIT_BAD_INPUT'],
    ['npy of the wrong dtype', 'application/x-npy', Buffer.concat([serializeNpy(new Float32Array(2), [2]).subarray(0, 10), Buffer.from("{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }          \n"), Buffer.alloc(8)]), 400, 'EVIT_BAD_INPUT'],
    ['keepRate out of range', 'application/json', Buffer.from(JSON.stringify({ image: good.toString('base64'), keepRate: 1.5 })), 400, 'EVIT_BAD_OPTIONS'],
    ['top 0', 'application/json', Buffer.from(JSON.stringify({ image: good.toString('base64'), top: 0 })), 400, 'EVIT_BAD_OPTIONS'],
    ['keepRate not a number', 'application/json', Buffer.from(JSON.stringify({ image: good.toString('base64'), keepRate: 'fast' })), 400, 'EVIT_BAD_OPTIONS'],
  ];
  for (const [what, type, body, status, code] of cases) {
    const r = await post(base, type, body);
    const ok = r.status === status && r.body?.error?.code === code && typeof r.body.error.message === 'string';
    t.ok(ok, `${what}: ${r.status} ${r.body?.error?.code} (${r.body?.error?.message ?? r.text.slice(0, 80)})`);
  }
  // A chunked body has no Content-Length: the limit applies while it streams.
  const chunked = await request(base, { headers: { 'content-type': 'image/png', 'transfer-encoding': 'chunked' }, body: Buffer.alloc(1100 * 1024) });
  t.ok(chunked.status === 413 && chunked.body.error.code === 'EVIT_BODY_TOO_LARGE', `chunked body over the limit: ${chunked.status}`);
  const r404 = await request(base, { method: 'GET', path: '/v2/nothing' });
  t.ok(r404.status === 404 && r404.body.error.code === 'EVIT_NOT_FOUND', 'unknown route: 404 JSON');

  t.equal((await health(base)).status, 'ok', 'healthz is still ok after all of that');
  const [alone] = await model.classify(good);
  for (const [what, type, body] of [
    ['png', 'image/png', good],
    ['JSON base64', 'application/json', Buffer.from(JSON.stringify({ image: good.toString('base64') }))],
    ['JSON data URL', 'application/json', Buffer.from(JSON.stringify({ image: `data:image/png;base64,${good.toString('base64')}` }))],
  ]) {
    const r = await post(base, type, body);
    t.ok(r.status === 200 && closeTo(r.body.results[0].logits, alone.logits), `${what}: 200 with the image's result`);
  }
  const rj = await post(base, 'image/jpeg', jpeg);
  const [aloneJpeg] = await model.classify(jpeg);
  t.ok(rj.status === 200 && closeTo(rj.body.results[0].logits, aloneJpeg.logits), 'jpeg: 200 with its result');
  const rw = await post(base, 'image/webp', webp);
  const [aloneWebp] = await model.classify(webp);
  t.ok(rw.status === 200 && closeTo(rw.body.results[0].logits, aloneWebp.logits), 'webp: 200 with its result');

  const npy = serializeNpy(tensor, [1, 3, 224, 224]);
  const want = await model.forward({ data: tensor, shape: [1, 3, 224, 224] }, { keepRate: 0.5 });
  for (const [what, type, body, path] of [
    ['raw .npy', 'application/x-npy', npy, '/v1/classify?keepRate=0.5&kept=1'],
    ['JSON .npy', 'application/json', Buffer.from(JSON.stringify({ npy: npy.toString('base64'), keepRate: 0.5, kept: true })), '/v1/classify'],
  ]) {
    const r = await post(base, type, body, path);
    const ok = r.status === 200 && r.body.keepRate === 0.5 && closeTo(r.body.results[0].logits, Array.from(want.logits)) &&
      JSON.stringify(r.body.results[0].kept.map((k) => k.tokens)) === JSON.stringify(want.kept.map((k) => Array.from(k.tokens)));
    t.ok(ok, `${what} at keepRate 0.5: logits and kept tokens of forward()`);
  }
  const m = (await request(base, { method: 'GET', path: '/metrics' })).text;
  t.ok(metric(m, 'evit_http_requests_total{route="classify",code="415"}') >= 5 && metric(m, 'evit_http_requests_total{route="classify",code="413"}') >= 4, 'error statuses are counted');
  await app.close();
});

test('the plugin mounts on an existing server under a prefix without touching its other routes', async (t) => {
  const host = Fastify();
  host.post('/echo', async (req) => ({ got: req.body }));
  await host.register(evitPlugin, { model, prefix: '/vision', top: 2 });
  const base = await host.listen({ host: '127.0.0.1', port: 0 });
  const png = await noisePng(41);
  const r = await post(base, 'image/png', png, '/vision/v1/classify');
  const [alone] = await model.classify(png, { top: 2 });
  t.ok(r.status === 200 && closeTo(r.body.results[0].logits, alone.logits), 'classify under the prefix');
  t.equal(r.body.results[0].top.length, 2, 'the plugin\'s top option applies');
  const echo = await post(base, 'text/plain', Buffer.from('hi'), '/echo');
  t.deepEqual([echo.status, echo.body], [200, { got: 'hi' }], 'the host keeps its own text/plain parser');
  t.equal((await request(base, { method: 'GET', path: '/vision/healthz' })).status, 200, 'healthz under the prefix');
  await host.close();
});

test('with the adaptive policy the keep rate falls under queueing delay, and responses and metrics say so', async (t) => {
  // Every batch waits maxWaitMs = 20 ms for company, far over the 1 ms target: each batch steps down.
  const { app, base } = await start({ batch: { maxWaitMs: 20, adaptiveKeep: { rates: [0.9, 0.7, 0.5], targetMs: 1, patience: 1, holdMs: 0 } } });
  const png = await noisePng(51);
  const rates = [];
  for (let i = 0; i < 3; i++) rates.push((await post(base, 'image/png', png)).body.keepRate);
  t.deepEqual(rates, [0.7, 0.5, 0.5], 'the keep rate steps down batch by batch, to the last rate');
  const [alone] = await model.classify(png, { keepRate: 0.5 });
  const r = await post(base, 'image/png', png);
  t.ok(closeTo(r.body.results[0].logits, alone.logits), 'the response equals classifying at the keep rate it names');
  const m = (await request(base, { method: 'GET', path: '/metrics' })).text;
  t.equal(metric(m, 'evit_keep_rate'), 0.5, 'keep-rate gauge');
  t.equal(metric(m, 'evit_keep_rate_changes_total{direction="down"}'), 2, 'two steps down counted');
  t.equal(metric(m, 'evit_batches_total{keep_rate="0.5"}'), 3, 'batches counted per keep rate');
  await app.close();
});

test('teardown', (t) => {
  model.dispose();
  t.end();
});
