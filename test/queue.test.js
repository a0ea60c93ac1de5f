'use strict';
// The queue worker as a library, against a real redis-server started on a free port: jobs batch
// together and complete with /v1/classify's JSON; bad jobs fail at once with the HTTP API's codes and
// are not retried, transient ones are; paths and URLs are read only where the worker allows; locks are
// renewed while jobs wait and run; close() finishes the held jobs and leaves the rest queued.
const test = require('tape');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const http = require('node:http');
const sharp = require('sharp');
const { Queue, QueueEvents } = require('bullmq');
const evit = require('../dist');
const { startRedis } = require('./helpers/redis');
const { noisePng, pngClaiming, request, until, metric } = require('./helpers/serve');

const { loadModel, createWorker, createServer, enqueue, waitForResult, openJobQueue, JobFailedError, serializeNpy } = evit;
const ATOL = 1e-4; // SPEC §4

let redis;
let model;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'evit-queue-'));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));
// Every test has queues of its own.
let queueCount = 0;
const freshQueue = () => `q${++queueCount}`;
const image = (seed) => noisePng(seed, 28, 28);
const closeTo = (a, b) => a.length === b.length && a.every((v, i) => Math.abs(v - b[i]) <= ATOL);

test('setup: redis-server and the bundled model', async (t) => {
  redis = await startRedis();
  t.match(redis.url, /^redis:\/\/127\.0\.0\.1:\d+$/, `redis-server on ${redis.url}`);
  model = await loadModel(undefined, { threads: 1 });
  t.equal(model.imgSize, 28, 'bundled 28×28 model');
});

function producer(queue) {
  const connection = { url: redis.url, maxRetriesPerRequest: null };
  const q = new Queue(queue, { connection });
  const events = new QueueEvents(queue, { connection });
  return { q, events, close: () => Promise.all([events.close(), q.close()]) };
}

test('jobs batch together and complete with the JSON of POST /v1/classify', async (t) => {
  const queue = freshQueue();
  const w = createWorker(model, { connection: redis.url, queue, batch: { maxBatchSize: 16, maxWaitMs: 20 } });
  await w.waitUntilReady();
  t.ok(w.ready, 'ready once connected');
  const p = producer(queue);
  await p.events.waitUntilReady();
  const pngs = await Promise.all(Array.from({ length: 40 }, (_, i) => image(i + 1)));
  const jobs = await Promise.all(pngs.map((png) => enqueue(p.q, png, { top: 3 })));
  const results = await Promise.all(jobs.map((j) => waitForResult(j, p.events, { timeoutMs: 30_000 })));
  let right = 0;
  for (let i = 0; i < pngs.length; i++) {
    const [alone] = await model.classify(pngs[i], { top: 3 });
    const r = results[i].results[0];
    if (closeTo(r.logits, alone.logits) && r.top.map((x) => x.index).join() === alone.top.map((x) => x.index).join()) right++;
  }
  t.equal(right, 40, 'every job has its own image\'s logits and top 3');
  t.ok(results.some((r) => r.batchSize > 1), `jobs shared forward passes (largest ${Math.max(...results.map((r) => r.batchSize))})`);
  t.ok(results.every((r) => r.keepRate === 0.7 && r.queueMs >= 0 && r.inferenceMs > 0), 'each names its keep rate and timings');

  // The same JSON as the HTTP API, field for field.
  const app = createServer({ model });
  const base = await app.listen({ host: '127.0.0.1', port: 0 });
  const viaHttp = (await request(base, { path: '/v1/classify?top=3&kept=1&keepRate=0.5', headers: { 'content-type': 'image/png' }, body: pngs[0] })).body;
  await app.close();
  const viaQueue = await waitForResult(await enqueue(p.q, pngs[0], { top: 3, kept: true, keepRate: 0.5 }), p.events);
  const strip = (r) => ({ ...r, batchSize: 0, queueMs: 0, inferenceMs: 0, results: r.results.map((x) => ({ ...x, logits: x.logits.map((v) => Math.round(v * 1e3)) })) });
  t.deepEqual(strip(viaQueue), strip(viaHttp), 'a job with top 3, kept and keepRate 0.5 answers what POST /v1/classify answers');
  t.deepEqual(Object.keys(viaQueue), ['keepRate', 'batchSize', 'queueMs', 'inferenceMs', 'results'], 'the same fields, in the same order');

  const npy = serializeNpy(await evit.preprocessImage(pngs[1], model.preprocess), [1, 1, 28, 28]);
  const viaNpy = await waitForResult(await enqueue(p.q, { npy }), p.events);
  t.ok(closeTo(viaNpy.results[0].logits, results[1].results[0].logits), 'an {npy} job: the logits of its image');

  const m = await w.metrics.render();
  t.equal(metric(m, 'evit_jobs_total{outcome="completed"}'), 42, 'metrics: 42 jobs completed');
  t.equal(metric(m, 'evit_job_duration_seconds_count{outcome="completed"}'), 42, 'job latency histogram');
  t.equal(metric(m, 'evit_images_total'), 42, 'images');
  t.equal(metric(m, 'evit_jobs_active'), 0, 'no job held now');
  await w.close();
  t.notOk(w.ready, 'not ready once closed');
  await p.close();
});

test('a bad job fails at once with the HTTP API\'s code and is not retried', async (t) => {
  const queue = freshQueue();
  const outside = path.join(tmp, 'outside.png');
  fs.writeFileSync(outside, await image(5));
  const allowed = fs.mkdtempSync(path.join(tmp, 'allowed-'));
  const w = createWorker(model, { connection: redis.url, queue, maxPixels: 1_000_000, maxBytes: 64 * 1024, allowPaths: [allowed], allowUrls: ['http://127.0.0.1:9/img/'] });
  const p = producer(queue);
  await Promise.all([w.waitUntilReady(), p.events.waitUntilReady()]);
  const png = await image(6);
  const gif = await sharp(png).gif().toBuffer();
  const b64 = (b) => b.toString('base64');
  const cases = [
    ['bytes that are no image', { image: b64(Buffer.from('definitely not a picture')) }, 'EVIT_BAD_INPUT'],
    ['a truncated png', { image: b64(png.subarray(0, 40)) }, 'EVIT_BAD_INPUT'],
    ['not base64', { image: '**not base64**' }, 'EVIT_BAD_INPUT'],
    ['a gif', { image: b64(gif) }, 'EVIT_UNSUPPORTED_MEDIA_TYPE'],
    ['a decompression bomb', { image: b64(await pngClaiming(100_000, 100_000)) }, 'EVIT_IMAGE_TOO_LARGE'],
    ['an image over maxBytes', { image: b64(Buffer.concat([png, Buffer.alloc(70 * 1024)])) }, 'EVIT_BODY_TOO_LARGE'],
    ['keepRate 1.5', { image: b64(png), keepRate: 1.5 }, 'EVIT_BAD_OPTIONS'],
    ['top 0', { image: b64(png), top: 0 }, 'EVIT_BAD_OPTIONS'],
    ['data that is a string', 'just a string', 'EVIT_BAD_INPUT'],
    ['no image at all', { top: 3 }, 'EVIT_BAD_INPUT'],
    ['both image and path', { image: b64(png), path: outside }, 'EVIT_BAD_INPUT'],
    ['a path outside the allowed directories', { path: outside }, 'EVIT_BAD_INPUT'],
    ['a missing file', { path: path.join(allowed, 'nope.png') }, 'EVIT_BAD_INPUT'],
    ['a URL under no allowed prefix', { url: 'http://127.0.0.1:9/secret/a.png' }, 'EVIT_BAD_INPUT'],
    ['a file: URL', { url: `file://${outside}` }, 'EVIT_BAD_INPUT'],
  ];
  for (const [what, data, code] of cases) {
    const t0 = Date.now();
    const job = await p.q.add('classify', data, { attempts: 3, backoff: { type: 'fixed', delay: 10 } });
    const err = await waitForResult(job, p.events, { timeoutMs: 20_000 }).then(() => null, (e) => e);
    const after = await p.q.getJob(job.id);
    const ok = err instanceof JobFailedError && err.code === code && err.jobId === job.id && after.attemptsMade === 1 && (await after.getState()) === 'failed';
    t.ok(ok, `${what}: ${err?.code} after ${after.attemptsMade} attempt in ${Date.now() - t0} ms (${err?.message})`);
  }
  const m = await w.metrics.render();
  t.equal(metric(m, 'evit_rejected_jobs_total{code="EVIT_BAD_INPUT"}'), cases.filter((c) => c[2] === 'EVIT_BAD_INPUT').length, 'failures counted by code');
  t.equal(metric(m, 'evit_jobs_total{outcome="failed"}'), cases.length, 'all failed for good');
  t.ok(w.ready, 'the worker is still taking jobs');
  const good = await waitForResult(await enqueue(p.q, png), p.events);
  t.equal(good.results.length, 1, 'and a good job after them completes');

  // The producer refuses what it can tell is wrong before it reaches Redis.
  for (const [what, args, code] of [
    ['a number as image', [42], 'EVIT_BAD_INPUT'],
    ['an empty buffer', [Buffer.alloc(0)], 'EVIT_BAD_INPUT'],
    ['keepRate 2', [png, { keepRate: 2 }], 'EVIT_BAD_OPTIONS'],
    ['top 1.5', [png, { top: 1.5 }], 'EVIT_BAD_OPTIONS'],
  ]) {
    const err = await enqueue(p.q, ...args).then(() => null, (e) => e);
    t.equal(err?.code, code, `enqueue with ${what}: ${code} (${err?.message})`);
  }
  await w.close();
  await p.close();
});

/** A loopback image server: `routes` maps a path to a function answering each request. */
async function imageServer(routes) {
  const hits = {};
  const server = http.createServer((req, res) => {
    hits[req.url] = (hits[req.url] ?? 0) + 1;
    const route = routes[req.url];
    if (!route) { res.writeHead(404); res.end('not here'); return; }
    route(req, res, hits[req.url]);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return { base: `http://127.0.0.1:${server.address().port}`, hits, close: () => new Promise((r) => server.close(r)) };
}

test('path and URL jobs: read only under the allowed directories and prefixes', async (t) => {
  const queue = freshQueue();
  const dir = fs.mkdtempSync(path.join(tmp, 'images-'));
  const png = await image(11);
  fs.writeFileSync(path.join(dir, 'a.png'), png);
  const secret = path.join(tmp, 'secret.png');
  fs.writeFileSync(secret, await image(12));
  fs.symlinkSync(secret, path.join(dir, 'link.png'));
  const tensor = await evit.preprocessImage(png, model.preprocess);
  fs.writeFileSync(path.join(dir, "a.npy"), serializeNpy(tensor, [1, 1, 28, 28]));
  const srv = await imageServer({
    '/img/a.png': (_q, res) => { res.writeHead(200, { 'content-type': 'image/png' }); res.end(png); },
    '/img/away': (_q, res) => { res.writeHead(302, { location: '/private/a.png' }); res.end(); },
    '/private/a.png': (_q, res) => { res.writeHead(200); res.end(png); },
  });
  const w = createWorker(model, { connection: redis.url, queue, allowPaths: [dir], allowUrls: [`${srv.base}/img/`] });
  const p = producer(queue);
  await Promise.all([w.waitUntilReady(), p.events.waitUntilReady()]);
  const [alone] = await model.classify(png);
  const run = async (img) => waitForResult(await enqueue(p.q, img, { job: { attempts: 1 } }), p.events, { timeoutMs: 20_000 }).then((r) => r, (e) => e);
  const fromFile = await run(path.join(dir, 'a.png'));
  t.ok(closeTo(fromFile.results?.[0].logits ?? [], alone.logits), 'a path in the allowed directory: the image\'s result');
  const fromNpy = await run({ path: path.join(dir, 'a.npy') });
  t.ok(closeTo(fromNpy.results?.[0].logits ?? [], alone.logits), 'a .npy path: read as a preprocessed tensor');
  const fromUrl = await run(`${srv.base}/img/a.png`);
  t.ok(closeTo(fromUrl.results?.[0].logits ?? [], alone.logits), 'a URL under the allowed prefix: the image\'s result');
  const link = await run({ path: path.join(dir, 'link.png') });
  t.ok(link.code === 'EVIT_BAD_INPUT' && /outside the directories/.test(link.message), `a symlink out of the directory: refused (${link.message})`);
  const dotdot = await run({ path: `${dir}/../secret.png` });
  t.ok(dotdot.code === 'EVIT_BAD_INPUT' && /outside the directories/.test(dotdot.message), 'a path with .. out of it: refused');
  const other = await run({ url: `${srv.base}/private/a.png` });
  t.ok(other.code === 'EVIT_BAD_INPUT' && srv.hits['/private/a.png'] === undefined, 'a URL outside the prefix: refused without fetching');
  const redirect = await run({ url: `${srv.base}/img/away` });
  t.ok(redirect.code === 'EVIT_BAD_INPUT' && /answered 302/.test(redirect.message) && srv.hits['/private/a.png'] === undefined, `a redirect out of the prefix is not followed (${redirect.message})`);
  const missing = await run({ url: `${srv.base}/img/none.png` });
  t.ok(missing.code === 'EVIT_BAD_INPUT' && /answered 404/.test(missing.message), 'a 404: a bad job');
  await w.close();
  await p.close();
  await srv.close();
});

test('transient failures are retried; a failure that lasts fails after the last attempt', async (t) => {
  const queue = freshQueue();
  const png = await image(21);
  const srv = await imageServer({
    // Unavailable twice, then the image.
    '/img/flaky.png': (_q, res, n) => { if (n <= 2) { res.writeHead(503); res.end('busy'); } else { res.writeHead(200); res.end(png); } },
    '/img/down.png': (_q, res) => { res.writeHead(503); res.end('down'); },
  });
  const w = createWorker(model, { connection: redis.url, queue, allowUrls: [`${srv.base}/img/`] });
  const p = producer(queue);
  await Promise.all([w.waitUntilReady(), p.events.waitUntilReady()]);
  const retry = { attempts: 3, backoff: { type: 'fixed', delay: 50 } };
  const job = await enqueue(p.q, `${srv.base}/img/flaky.png`, { job: retry });
  const r = await waitForResult(job, p.events, { timeoutMs: 20_000 });
  const [alone] = await model.classify(png);
  t.ok(closeTo(r.results[0].logits, alone.logits), 'a URL that answered 503 twice: completed on the third attempt');
  const done = await p.q.getJob(job.id);
  t.deepEqual([done.attemptsMade, srv.hits['/img/flaky.png']], [3, 3], 'three attempts, three downloads');
  const down = await enqueue(p.q, `${srv.base}/img/down.png`, { job: { attempts: 2, backoff: { type: 'fixed', delay: 50 } } });
  const err = await waitForResult(down, p.events, { timeoutMs: 20_000 }).then(() => null, (e) => e);
  t.ok(err instanceof JobFailedError && err.code === 'EVIT_FETCH_FAILED', `a URL that stays down: EVIT_FETCH_FAILED (${err?.message})`);
  t.deepEqual([(await p.q.getJob(down.id)).attemptsMade, srv.hits['/img/down.png']], [2, 2], 'after both attempts');
  const m = await w.metrics.render();
  t.equal(metric(m, 'evit_jobs_total{outcome="retry"}'), 3, 'three failures to be retried');
  t.equal(metric(m, 'evit_rejected_jobs_total{code="EVIT_FETCH_FAILED"}'), 4, 'four download failures counted');
  await w.close();
  await p.close();
  await srv.close();
});

test('locks are renewed while jobs wait for their batch and run: none stalls', async (t) => {
  const queue = freshQueue();
  // Jobs wait 3 s in the batcher, three times the lock duration.
  const w = createWorker(model, { connection: redis.url, queue, lockDurationMs: 1000, stalledIntervalMs: 300, batch: { maxBatchSize: 1000, maxWaitMs: 3000 } });
  const p = producer(queue);
  await Promise.all([w.waitUntilReady(), p.events.waitUntilReady()]);
  let stalled = 0;
  p.events.on('stalled', () => { stalled++; });
  const pngs = await Promise.all([31, 32, 33, 34, 35].map(image));
  const t0 = Date.now();
  const jobs = await Promise.all(pngs.map((png) => enqueue(p.q, png)));
  const results = await Promise.all(jobs.map((j) => waitForResult(j, p.events, { timeoutMs: 20_000 })));
  const waited = Date.now() - t0;
  t.ok(waited >= 2900, `the jobs were held ${waited} ms`);
  t.ok(results.every((r) => r.batchSize === 5), 'in one batch');
  const after = await Promise.all(jobs.map((j) => p.q.getJob(j.id)));
  t.deepEqual(after.map((j) => [j.attemptsStarted, j.stalledCounter]), after.map(() => [1, 0]), 'each started once, never stalled');
  t.equal(stalled, 0, 'no stalled event');
  await w.close();
  await p.close();
});

test('close() stops taking jobs, finishes the held ones at once, and leaves the rest queued', async (t) => {
  const queue = freshQueue();
  const w = createWorker(model, { connection: redis.url, queue, concurrency: 3, batch: { maxBatchSize: 1000, maxWaitMs: 60_000 } });
  const jq = openJobQueue({ connection: redis.url, queue });
  await Promise.all([w.waitUntilReady(), jq.waitUntilReady()]);
  const pngs = await Promise.all(Array.from({ length: 8 }, (_, i) => image(40 + i)));
  const jobs = [];
  for (const png of pngs) jobs.push(await jq.enqueue(png));
  await until('three held jobs', () => w.batcher.queued === 3);
  const t0 = Date.now();
  await w.close();
  t.ok(Date.now() - t0 < 10_000, `closed in ${Date.now() - t0} ms, without waiting out maxWaitMs`);
  const states = await Promise.all(jobs.map((j) => j.getState()));
  t.deepEqual([states.filter((s) => s === 'completed').length, states.filter((s) => s === 'waiting').length], [3, 5], 'three completed, five still waiting');
  const second = createWorker(model, { connection: redis.url, queue });
  const rest = await Promise.all(jobs.map((j) => jq.result(j, { timeoutMs: 20_000 })));
  t.equal(rest.length, 8, 'another worker takes the rest');
  const r = await jq.classify(pngs[0], { timeoutMs: 20_000 });
  const [alone] = await model.classify(pngs[0]);
  t.ok(closeTo(r.results[0].logits, alone.logits), 'JobQueue.classify: enqueue and wait in one call');
  const late = await jq.result(await jq.enqueue(Buffer.from('bad')), { timeoutMs: 20_000 }).then(() => null, (e) => e);
  t.equal(late?.code, 'EVIT_BAD_INPUT', 'JobQueue.result: a JobFailedError with the code');
  await second.close();
  const waiting = await jq.enqueue(pngs[1]);
  const timeout = await jq.result(waiting, { timeoutMs: 200 }).then(() => null, (e) => e);
  t.equal(timeout?.code, 'EVIT_TIMEOUT', 'no worker: waiting times out with EVIT_TIMEOUT');
  await jq.close();
});

test('bad options are typed errors', (t) => {
  for (const [what, opts, re] of [
    ['no queue', { connection: 'redis://127.0.0.1:1' }, /queue must be/],
    ['a queue name with a colon', { connection: 'redis://127.0.0.1:1', queue: 'a:b' }, /without ':'/],
    ['an http URL as connection', { connection: 'http://127.0.0.1:1', queue: 'x' }, /redis:\/\//],
    ['concurrency over maxQueue', { connection: 'redis://127.0.0.1:1', queue: 'x', concurrency: 300 }, /maxQueue/],
    ['a missing allowed directory', { connection: 'redis://127.0.0.1:1', queue: 'x', allowPaths: [path.join(tmp, 'none')] }, /allowPaths/],
    ['a URL prefix without a trailing slash', { connection: 'redis://127.0.0.1:1', queue: 'x', allowUrls: ['https://images.example.com/img'] }, /must end with/],
  ]) {
    let err = null;
    try {
      createWorker(model, opts);
    } catch (e) {
      err = e;
    }
    t.ok(err?.code === 'EVIT_BAD_OPTIONS' && re.test(err.message), `${what}: ${err?.message}`);
  }
  t.end();
});

test('teardown', async (t) => {
  model.dispose();
  await redis.stop();
  t.pass('redis-server stopped');
});
