'use strict';
// The batcher: concurrent calls grouped into batches, each caller getting exactly the
// result of running its input alone; keep rates never mixed in a batch; abort,
// overload and close behave as documented.
const test = require('tape');
const evit = require('../dist');
const { mulberry32, uniform } = require('./helpers/reference');
const { tinyModel, tinyOptions } = require('./helpers/fixtures');

const { loadModel, Batcher, AdaptiveKeepPolicy, AbortedError, OverloadedError, ClosedError, OptionsError, InputError } = evit;
const PER = 3 * 224 * 224;
// SPEC §4: fp32 logits within 1e-4 of a reference; a batch changes only the GEMM shapes.
const ATOL = 1e-4;

let model;
test('setup', async (t) => {
  model = await loadModel(tinyModel, tinyOptions);
  t.ok(model, 'tiny fixture loaded');
});

function images(n, seed) {
  const rand = mulberry32(seed);
  return Array.from({ length: n }, () => ({ data: uniform(rand, PER, -2, 2), shape: [1, 3, 224, 224] }));
}

function sameAsAlone(t, got, alone, what) {
  let worst = 0;
  for (let i = 0; i < alone.logits.length; i++) worst = Math.max(worst, Math.abs(got.logits[i] - alone.logits[i]));
  const keptSame = alone.kept.every((k, j) => k.block === got.kept[j].block && k.tokens.every((v, q) => v === got.kept[j].tokens[q]));
  return { ok: got.logits.length === alone.logits.length && worst <= ATOL && keptSame, worst, keptSame, what };
}

test('200 concurrent forward calls each get the result of running alone', async (t) => {
  const inputs = images(200, 1);
  const batcher = new Batcher(model, { maxBatchSize: 16, maxWaitMs: 5 });
  const events = [];
  batcher.on('batch', (e) => events.push(e));
  const results = await Promise.all(inputs.map((x) => batcher.forward(x)));
  const checks = [];
  for (let i = 0; i < inputs.length; i++) checks.push(sameAsAlone(t, results[i], await model.forward(inputs[i]), `request ${i}`));
  const bad = checks.filter((c) => !c.ok);
  t.equal(bad.length, 0, `every result equals its own input's alone (worst |Δlogit| ${Math.max(...checks.map((c) => c.worst)).toExponential(2)})`);
  for (const b of bad.slice(0, 3)) t.comment(`${b.what}: worst ${b.worst}, kept same ${b.keptSame}`);
  t.deepEqual(results[0].shape, [1, 10], 'each caller gets its own row');
  t.equal(events.reduce((a, e) => a + e.images, 0), 200, 'batches together ran exactly the 200 images');
  t.ok(events.every((e) => e.images <= 16), 'no batch exceeds maxBatchSize');
  t.ok(events.some((e) => e.images > 1), `requests were batched (${events.length} native calls)`);
  t.ok(results.every((r) => r.keepRate === 0.7), 'every result names the keep rate that served it (the model default)');
  t.ok(results.every((r) => r.batchSize >= 1 && r.batchSize <= 16 && r.queueMs >= 0), 'batch size and queue delay reported');
  await batcher.close();
});

test('requests with different keep rates never share a batch', async (t) => {
  const inputs = images(24, 2);
  const rates = inputs.map((_, i) => [0.5, 0.9, undefined][i % 3]);
  const batcher = new Batcher(model, { maxBatchSize: 8, maxWaitMs: 5 });
  const events = [];
  batcher.on('batch', (e) => events.push(e));
  const results = await Promise.all(inputs.map((x, i) => batcher.forward(x, { keepRate: rates[i] })));
  let ok = 0;
  for (let i = 0; i < inputs.length; i++) {
    const want = rates[i] ?? 0.7;
    const c = sameAsAlone(t, results[i], await model.forward(inputs[i], { keepRate: want }), `request ${i}`);
    if (c.ok && results[i].keepRate === want) ok++;
  }
  t.equal(ok, 24, 'each result ran at its own keep rate and equals that rate alone');
  t.equal(events.reduce((a, e) => a + e.images, 0), 24, 'all images ran once');
  const perRate = (r) => events.filter((e) => e.keepRate === r).reduce((a, e) => a + e.images, 0);
  t.deepEqual([perRate(0.5), perRate(0.7), perRate(0.9)], [8, 8, 8], 'batches are per keep rate');
  const kept = results[0].kept.map((k) => k.shape[1]);
  t.deepEqual(kept, model.scheduleFor({ keepRate: 0.5 }).dropBlocks.map((b) => model.scheduleFor({ keepRate: 0.5 }).tokenCounts[b]), 'kept-token counts follow the rate');
  await batcher.close();
});

test('a request of several images is split back out whole', async (t) => {
  const rand = mulberry32(3);
  const three = { data: uniform(rand, 3 * PER, -2, 2), shape: [3, 3, 224, 224] };
  const one = images(1, 4)[0];
  const batcher = new Batcher(model, { maxBatchSize: 8, maxWaitMs: 5 });
  const [a, b] = await Promise.all([batcher.forward(three), batcher.forward(one)]);
  t.deepEqual(a.shape, [3, 10], 'three rows for the three-image request');
  t.ok(sameAsAlone(t, a, await model.forward(three), 'three').ok, 'three-image request equals running alone');
  t.ok(sameAsAlone(t, b, await model.forward(one), 'one').ok, 'one-image request equals running alone');
  t.equal(a.batchSize, 4, 'both requests shared one native call');
  await batcher.close();
});

test('classify through the batcher equals Model.classify of the same image', async (t) => {
  const sharp = require('sharp');
  const rand = mulberry32(5);
  const pngs = await Promise.all([0, 1, 2].map(() => {
    const raw = Buffer.from(Array.from({ length: 64 * 48 * 3 }, () => Math.floor(rand() * 256)));
    return sharp(raw, { raw: { width: 64, height: 48, channels: 3 } }).png().toBuffer();
  }));
  const batcher = new Batcher(model, { maxBatchSize: 8, maxWaitMs: 5 });
  const got = await Promise.all(pngs.map((p) => batcher.classify(p, { top: 3 })));
  for (let i = 0; i < pngs.length; i++) {
    const [want] = await model.classify(pngs[i], { top: 3 });
    const worst = Math.max(...want.logits.map((v, c) => Math.abs(v - got[i].results[0].logits[c])));
    t.ok(worst <= ATOL, `image ${i}: logits within ${ATOL} (${worst.toExponential(2)})`);
    t.deepEqual(got[i].results[0].top.map((x) => x.index), want.top.map((x) => x.index), `image ${i}: same top 3`);
    t.deepEqual(got[i].results[0].kept, want.kept, `image ${i}: same kept tokens`);
    t.equal(got[i].keepRate, 0.7, `image ${i}: keep rate reported`);
  }
  await batcher.close();
});

test('abort: before queueing, while queued, while running', async (t) => {
  const [x, y, z] = images(3, 6);
  const batcher = new Batcher(model, { maxBatchSize: 100, maxWaitMs: 60_000 });
  const pre = new AbortController();
  pre.abort(new Error('gone'));
  await rejectsWith(t, batcher.forward(x, { signal: pre.signal }), AbortedError, 'EVIT_ABORTED', 'already-aborted signal');

  const ac = new AbortController();
  const p1 = batcher.forward(x);
  const p2 = batcher.forward(y, { signal: ac.signal });
  const p3 = batcher.forward(z);
  t.equal(batcher.queued, 3, 'three queued (the wait is long)');
  ac.abort(new Error('client went away'));
  await rejectsWith(t, p2, AbortedError, 'EVIT_ABORTED', 'aborted while queued');
  t.equal(batcher.queued, 2, 'the aborted request left the queue');
  const closed = batcher.close();
  const [r1, r3] = await Promise.all([p1, p3]);
  t.equal(r1.batchSize, 2, 'the rest ran together without the aborted one');
  t.ok(sameAsAlone(t, r3, await model.forward(z), 'z').ok, 'neighbours are unaffected');
  await closed;

  const running = new Batcher(model, { maxBatchSize: 1, maxWaitMs: 0 });
  const ac2 = new AbortController();
  const q1 = running.forward(x, { signal: ac2.signal });
  const q2 = running.forward(y);
  t.equal(running.inFlight, 1, 'first request is running');
  ac2.abort();
  await rejectsWith(t, q1, AbortedError, 'EVIT_ABORTED', 'aborted while running');
  t.ok(sameAsAlone(t, await q2, await model.forward(y), 'y').ok, 'the next request still runs');
  await running.close();
});

test('a full queue rejects with OverloadedError; the accepted requests still run', async (t) => {
  const inputs = images(5, 7);
  const batcher = new Batcher(model, { maxBatchSize: 100, maxWaitMs: 60_000, maxQueue: 4 });
  const accepted = inputs.slice(0, 4).map((x) => batcher.forward(x));
  await rejectsWith(t, batcher.forward(inputs[4]), OverloadedError, 'EVIT_OVERLOADED', 'fifth request');
  const closed = batcher.close();
  const results = await Promise.all(accepted);
  t.equal(results.length, 4, 'the four accepted requests resolved');
  await closed;
});

test('close finishes every accepted request (images still being decoded included) and refuses new ones', async (t) => {
  const sharp = require('sharp');
  const png = await sharp({ create: { width: 300, height: 260, channels: 3, background: { r: 200, g: 30, b: 90 } } }).png().toBuffer();
  const batcher = new Batcher(model, { maxBatchSize: 4, maxWaitMs: 60_000 });
  let settled = 0;
  const accepted = [
    ...images(6, 8).map((x) => batcher.forward(x)),
    batcher.classify(png), // still in preprocessing when close() is called
  ].map((p) => p.then((r) => { settled++; return r; }));
  const closed = batcher.close().then(() => settled);
  await rejectsWith(t, batcher.forward(images(1, 9)[0]), ClosedError, 'EVIT_CLOSED', 'a request after close');
  await rejectsWith(t, batcher.classify(png), ClosedError, 'EVIT_CLOSED', 'a classify after close');
  const results = await Promise.all(accepted);
  t.equal(results.length, 7, 'all seven accepted requests resolved');
  t.equal(await closed, 7, 'close resolved only after all of them settled');
});

test('invalid options and inputs are typed errors', async (t) => {
  t.throws(() => new Batcher(model, { maxBatchSize: 0 }), OptionsError, 'maxBatchSize 0');
  t.throws(() => new Batcher(model, { maxWaitMs: -1 }), OptionsError, 'negative maxWaitMs');
  t.throws(() => new Batcher(model, { maxQueue: 1.5 }), OptionsError, 'fractional maxQueue');
  t.throws(() => new Batcher(model, { adaptiveKeep: { rates: [0.5, 0.7] } }), OptionsError, 'increasing adaptive rates');
  const batcher = new Batcher(model);
  const x = images(1, 10)[0];
  await rejectsWith(t, batcher.forward(x, { keepRate: 1.5 }), OptionsError, 'EVIT_BAD_OPTIONS', 'keepRate 1.5');
  await rejectsWith(t, batcher.forward({ data: x.data, shape: [1, 3, 112, 112] }), InputError, 'EVIT_BAD_INPUT', 'wrong image size');
  await rejectsWith(t, batcher.forward({ data: x.data.subarray(1), shape: [1, 3, 224, 224] }), InputError, 'EVIT_BAD_INPUT', 'short data');
  await rejectsWith(t, batcher.classify(Buffer.from('not an image')), InputError, 'EVIT_BAD_INPUT', 'undecodable image');
  await rejectsWith(t, batcher.classify(x, { top: 0 }), OptionsError, 'EVIT_BAD_OPTIONS', 'top 0');
  t.equal(batcher.queued + batcher.inFlight, 0, 'nothing left behind');
  await batcher.close();
});

test('a batch never exceeds the images one native call takes (backendInfo().limits.maxBatch)', async (t) => {
  const { maxBatch } = evit.backendInfo().limits;
  t.equal(new Batcher(model, { maxBatchSize: maxBatch }).maxBatchSize, maxBatch, 'maxBatchSize up to the limit');
  t.throws(() => new Batcher(model, { maxBatchSize: maxBatch + 1 }),
    (e) => e instanceof OptionsError && e.message === `maxBatchSize must be an integer from 1 to ${maxBatch}, got ${maxBatch + 1}`,
    'maxBatchSize above the limit names it');
  const batcher = new Batcher(model);
  // Refused from its shape alone, before its data is looked at or it joins a batch.
  const tooMany = { data: new Float32Array(PER), shape: [maxBatch + 1, 3, 224, 224] };
  try {
    await batcher.forward(tooMany);
    t.fail('accepted');
  } catch (e) {
    t.ok(e instanceof InputError, 'InputError');
    t.equal(e.message, `input batch ${maxBatch + 1} exceeds the maximum of ${maxBatch}`, e.message);
  }
  // The same check, worded alike, as Model.forward.
  try {
    await model.forward(tooMany);
    t.fail('accepted');
  } catch (e) {
    t.equal(e.message, `input batch ${maxBatch + 1} exceeds the maximum of ${maxBatch}`, 'Model.forward says the same');
  }
  t.equal(batcher.queued, 0, 'nothing queued');
  await batcher.close();
});

test('with an adaptive policy, batches run at the policy rate and results say so', async (t) => {
  // Every batch here waits maxWaitMs (20 ms) for company, well over the 1 ms target: step down each batch.
  const policy = new AdaptiveKeepPolicy({ rates: [0.9, 0.7, 0.5], targetMs: 1, patience: 1, holdMs: 0 });
  const batcher = new Batcher(model, { maxBatchSize: 64, maxWaitMs: 20, adaptiveKeep: policy });
  const [x, y] = images(2, 11);
  t.equal(batcher.keepRate, 0.9, 'starts at the first rate');
  const a = await batcher.forward(x);
  t.equal(a.keepRate, 0.7, 'first batch waited past the target: ran at 0.7');
  const b = await batcher.forward(y);
  t.equal(b.keepRate, 0.5, 'second: 0.5');
  t.ok(sameAsAlone(t, b, await model.forward(y, { keepRate: 0.5 }), 'y').ok, 'equals running alone at 0.5');
  const c = await batcher.forward(x, { keepRate: 0.9 });
  t.equal(c.keepRate, 0.9, 'an explicit per-request keep rate overrides the policy');
  t.deepEqual(policy.changes.map((ch) => [ch.from, ch.to]), [[0.9, 0.7], [0.7, 0.5]], 'policy history');
  await batcher.close();
});

test('teardown', (t) => {
  model.dispose();
  t.end();
});

async function rejectsWith(t, promise, Cls, code, what) {
  try {
    await promise;
    t.fail(`${what}: resolved`);
  } catch (err) {
    t.ok(err instanceof Cls && err.code === code, `${what}: ${Cls.name} ${code} (${err.message})`);
  }
}
