'use strict';
// `evit worker` processes on one queue of a real redis-server: 1,000 jobs over two workers, each
// answered once with its right answer in shared batches; a worker killed with SIGKILL mid-run loses no
// job (BullMQ's stalled-job recovery hands its jobs to the other) and none completes twice; SIGTERM
// finishes the held jobs and leaves the rest queued; bad options exit 2.
const test = require('tape');
const path = require('node:path');
const { spawn, spawnSync } = require('node:child_process');
const { Queue, QueueEvents } = require('bullmq');
const evit = require('../dist');
const { startRedis } = require('./helpers/redis');
const { noisePng, request, until, metric } = require('./helpers/serve');

const CLI = path.join(__dirname, '..', 'dist', 'cli.js');
const ATOL = 1e-4; // SPEC §4
const image = (seed) => noisePng(seed, 28, 28);

let redis;
let model;
const children = new Set();
process.on('exit', () => { for (const c of children) c.kill('SIGKILL'); });

test('setup: redis-server and the bundled model', async (t) => {
  redis = await startRedis();
  model = await evit.loadModel(undefined, { threads: 1 });
  t.pass(`redis-server on ${redis.url}`);
});

/** An `evit worker` process with the bundled model on one thread; resolves its metrics URL once it takes jobs. */
function startWorker(queue, name, args = []) {
  const child = spawn(process.execPath, [CLI, 'worker', '--redis', redis.url, '--queue', queue, '--name', name, '--threads', '1',
    '--metrics-port', '0', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  children.add(child);
  let stderr = '';
  child.stderr.on('data', (c) => { stderr += c; });
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => { children.delete(child); resolve({ code, signal }); }));
  const ready = new Promise((resolve, reject) => {
    const check = () => {
      const m = /metrics and health on (http:\/\/\S+)/.exec(stderr);
      if (m && /worker taking jobs/.test(stderr)) resolve(m[1]);
    };
    child.stderr.on('data', check);
    exited.then(({ code, signal }) => reject(new Error(`${name} exited (${code ?? signal}): ${stderr}`)));
  });
  return { child, name, ready, exited, stderr: () => stderr };
}

/** Counts every completion and stall event of a queue from now on. */
function watch(events) {
  const completed = new Map();
  const failed = new Map();
  let stalled = 0;
  events.on('completed', ({ jobId }) => completed.set(jobId, (completed.get(jobId) ?? 0) + 1));
  events.on('failed', ({ jobId, failedReason }) => failed.set(jobId, failedReason));
  events.on('stalled', () => { stalled++; });
  return { completed, failed, stalled: () => stalled };
}

async function expectedLogits(pngs) {
  const out = [];
  for (let i = 0; i < pngs.length; i += 100) out.push(...(await model.classify(pngs.slice(i, i + 100))).map((r) => r.logits));
  return out;
}

const closeTo = (a, b) => a.length === b.length && a.every((v, i) => Math.abs(v - b[i]) <= ATOL);

async function openQueue(name) {
  const connection = { url: redis.url, maxRetriesPerRequest: null };
  const queue = new Queue(name, { connection });
  const events = new QueueEvents(name, { connection });
  await events.waitUntilReady();
  return { queue, events, close: () => Promise.all([events.close(), queue.close()]) };
}

test('two workers, 1,000 jobs: each answered once with its own result, in batches; a bad job fails fast', async (t) => {
  const { queue, events, close } = await openQueue('thousand');
  const seen = watch(events);
  const a = startWorker('thousand', 'worker-a', ['--max-wait-ms', '5']);
  const b = startWorker('thousand', 'worker-b', ['--max-wait-ms', '5']);
  const bases = await Promise.all([a.ready, b.ready]);
  const pngs = await Promise.all(Array.from({ length: 1000 }, (_, i) => image(i + 1)));
  const want = await expectedLogits(pngs);
  const t0 = Date.now();
  const jobs = await Promise.all(pngs.map((png) => evit.enqueue(queue, png)));
  const bad = await evit.enqueue(queue, Buffer.from('not an image at all'));
  await until('1,000 completions', () => seen.completed.size === 1000 && seen.failed.size === 1, 120_000);
  const elapsed = Date.now() - t0;
  const done = await Promise.all(jobs.map((j) => queue.getJob(j.id)));
  let right = 0;
  for (let i = 0; i < 1000; i++) if (closeTo(done[i].returnvalue.results[0].logits, want[i])) right++;
  t.equal(right, 1000, `all 1,000 jobs have their own image's logits (${elapsed} ms)`);
  t.ok([...seen.completed.values()].every((n) => n === 1), 'each completed exactly once');
  const by = { 'worker-a': 0, 'worker-b': 0 };
  for (const j of done) by[j.processedBy]++;
  t.ok(by['worker-a'] > 0 && by['worker-b'] > 0 && by['worker-a'] + by['worker-b'] === 1000, `both workers took jobs (a ${by['worker-a']}, b ${by['worker-b']})`);
  const sizes = done.map((j) => j.returnvalue.batchSize);
  t.ok(Math.max(...sizes) > 1, `jobs shared forward passes (mean batch ${(sizes.reduce((x, y) => x + y, 0) / sizes.length).toFixed(1)}, largest ${Math.max(...sizes)})`);
  const failed = await queue.getJob(bad.id);
  t.ok(/^EVIT_BAD_INPUT: /.test(failed.failedReason) && failed.attemptsMade === 1 && failed.opts.attempts === 3,
    `the bad job: ${failed.failedReason.split(':')[0]} after 1 of 3 allowed attempts`);
  t.ok(failed.finishedOn - failed.processedOn < 1000, `it failed ${failed.finishedOn - failed.processedOn} ms after it started`);

  const metrics = await Promise.all(bases.map(async (base) => (await request(base, { method: 'GET', path: '/metrics' })).text));
  const completedBy = metrics.map((m) => metric(m, 'evit_jobs_total{outcome="completed"}'));
  t.equal(completedBy[0] + completedBy[1], 1000, `the workers' metrics count 1,000 completed jobs (${completedBy.join(' + ')})`);
  t.equal(metrics.map((m) => metric(m, 'evit_rejected_jobs_total{code="EVIT_BAD_INPUT"}') ?? 0).reduce((x, y) => x + y, 0), 1, 'and one bad job');
  const ready = await request(bases[0], { method: 'GET', path: '/v2/health/ready' });
  t.deepEqual([ready.status, ready.body], [200, { ready: true }], 'a worker\'s /v2/health/ready');
  a.child.kill('SIGTERM');
  b.child.kill('SIGTERM');
  t.deepEqual((await Promise.all([a.exited, b.exited])).map((e) => e.code), [0, 0], 'both exit 0 on SIGTERM');
  await close();
});

test('a worker killed with SIGKILL mid-run: every job still completes exactly once', async (t) => {
  const { queue, events, close } = await openQueue('killed');
  const seen = watch(events);
  // A short lock, so the dead worker's jobs are recovered within seconds rather than BullMQ's 30.
  const args = ['--max-wait-ms', '5', '--concurrency', '16', '--lock-duration-ms', '3000', '--stalled-interval-ms', '500'];
  const victim = startWorker('killed', 'victim', args);
  const survivor = startWorker('killed', 'survivor', args);
  const [victimBase] = await Promise.all([victim.ready, survivor.ready]);
  const pngs = await Promise.all(Array.from({ length: 400 }, (_, i) => image(5000 + i)));
  const want = await expectedLogits(pngs);
  const jobs = await Promise.all(pngs.map((png) => evit.enqueue(queue, png)));
  // Killed while it holds jobs: they are locked in Redis under its name and will never be finished by it.
  await until('the victim to hold jobs', async () => seen.completed.size >= 50 &&
    metric((await request(victimBase, { method: 'GET', path: '/metrics' })).text, 'evit_jobs_active') > 0, 60_000);
  victim.child.kill('SIGKILL');
  const { signal } = await victim.exited;
  // Its locks outlive it by up to --lock-duration-ms: what is still active under its name is what it held.
  const heldByVictim = (await queue.getActive()).filter((j) => j.processedBy === 'victim').map((j) => j.id);
  t.equal(signal, 'SIGKILL', `the victim was killed holding ${heldByVictim.length} active jobs`);
  await until('400 completions', () => seen.completed.size === 400, 120_000);
  const done = await Promise.all(jobs.map((j) => queue.getJob(j.id)));
  let right = 0;
  for (let i = 0; i < 400; i++) if (done[i].returnvalue && closeTo(done[i].returnvalue.results[0].logits, want[i])) right++;
  t.equal(right, 400, 'all 400 jobs completed with their own image\'s logits');
  t.ok([...seen.completed.values()].every((n) => n === 1), 'none completed twice');
  t.equal(seen.failed.size, 0, 'none failed');
  t.ok(seen.stalled() >= 1, `the dead worker's jobs were found stalled (${seen.stalled()} stalled events)`);
  const recovered = done.filter((j) => heldByVictim.includes(j.id));
  t.ok(recovered.length > 0 && recovered.every((j) => j.processedBy === 'survivor' && j.stalledCounter >= 1),
    `the ${recovered.length} jobs it held were finished by the survivor after stalling`);
  t.equal(await queue.getActiveCount(), 0, 'nothing left active');
  survivor.child.kill('SIGTERM');
  t.equal((await survivor.exited).code, 0, 'the survivor exits 0 on SIGTERM');
  await close();
});

test('SIGTERM: the worker takes no more jobs, finishes the ones it holds, exits 0', async (t) => {
  const { queue, events, close } = await openQueue('drained');
  const seen = watch(events);
  // Held jobs wait for company up to a minute: at SIGTERM they are certainly still held.
  const w = startWorker('drained', 'drainer', ['--max-wait-ms', '60000', '--max-batch', '1000', '--concurrency', '4']);
  const base = await w.ready;
  const pngs = await Promise.all(Array.from({ length: 10 }, (_, i) => image(9000 + i)));
  const jobs = [];
  for (const png of pngs) jobs.push(await evit.enqueue(queue, png));
  await until('four held jobs in the batch queue', async () => {
    const m = (await request(base, { method: 'GET', path: '/metrics' })).text;
    return metric(m, 'evit_jobs_active') === 4 && metric(m, 'evit_queue_depth') === 4;
  });
  w.child.kill('SIGTERM');
  const { code } = await w.exited;
  t.equal(code, 0, 'exits 0');
  await until('the completions to arrive', () => seen.completed.size === 4);
  const states = await Promise.all(jobs.map((j) => j.getState()));
  t.deepEqual([states.filter((s) => s === 'completed').length, states.filter((s) => s === 'waiting').length], [4, 6], 'the 4 held jobs completed, 6 still waiting for another worker');
  const finished = (await Promise.all(jobs.map((j) => queue.getJob(j.id)))).filter((j) => j.returnvalue);
  t.ok(finished.every((j) => j.returnvalue.batchSize === 4), 'in one batch, run at once');
  t.match(w.stderr(), /SIGTERM: taking no more jobs, finishing the 4 held[\s\S]*stopped/, 'says it is draining, then stopped');
  await close();
});

test('evit worker rejects bad options with exit code 2', (t) => {
  for (const [args, re] of [
    [[], /needs --queue/],
    [['--queue', 'q', '--redis', 'http://127.0.0.1:6379'], /--redis must be a redis:\/\//],
    [['--queue', 'q', '--target-ms', '20'], /need --adaptive/],
    [['--queue', 'q', '--max-bytes', 'lots'], /--max-bytes must be a byte count/],
    [['--queue', 'q', 'extra'], /no positional arguments/],
    [['--queue', 'q', '--allow-url', 'https://images.example.com/img'], /must end with/],
  ]) {
    const r = spawnSync(process.execPath, [CLI, 'worker', ...args], { encoding: 'utf8', timeout: 30_000 });
    t.equal(r.status, 2, `${args.join(' ') || '(none)'}: exit 2`);
    t.match(r.stderr, re, `${args.join(' ') || '(none)'}: ${r.stderr.split('\n')[0]}`);
  }
  t.end();
});

test('teardown', async (t) => {
  model.dispose();
  await redis.stop();
  t.pass('redis-server stopped');
});
