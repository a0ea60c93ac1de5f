'use strict';
// Several batches in flight on one model (more than it has streams), the graph cache's replays,
// the profile, and the model's lifetime: dispose while idle and while a batch runs.
const test = require('tape');
const { loadModel, DisposedError } = require('../../dist');
const { tinyModel, tinyOptions } = require('../helpers/fixtures');
const { LOGIT_TOL, modelPair, randomImages, checkLogits, checkKept, rejects } = require('./compare');

const same = (a, b) => a.length === b.length && a.every((v, i) => Object.is(v, b[i]));

test('six bf16 batches in flight on two streams: each equals its own batch run alone', async (t) => {
  const { cpu, gpu } = await modelPair('bf16', { streams: 2, maxBatch: 3 });
  const jobs = [1, 3, 2, 4, 1, 2].map((B, i) => ({
    input: randomImages(cpu, B, 300 + i),
    opts: i % 2 ? { keepRate: 0.5, fuse: false } : { keepRate: 0.7 },
  }));
  const alone = [];
  for (const j of jobs) alone.push(await gpu.forward(j.input, j.opts));
  const together = await Promise.all(jobs.map((j) => gpu.forward(j.input, j.opts)));
  const mixed = together.map((r, i) => (same(Array.from(r.logits), Array.from(alone[i].logits)) &&
    r.kept.every((k, b) => same(Array.from(k.tokens), Array.from(alone[i].kept[b].tokens))) ? null : i)).filter((i) => i !== null);
  t.deepEqual(mixed, [], 'concurrent results are bit-identical to the same batches run one at a time');
  t.ok(together.every((r) => r.logits.every(Number.isFinite)), 'with finite logits');
  cpu.dispose();
  gpu.dispose();
});

test('f32 batches in flight on two streams match the CPU', async (t) => {
  const { cpu, gpu } = await modelPair('f32', { streams: 2, maxBatch: 4 });
  const jobs = [3, 6, 1, 4].map((B, i) => ({ input: randomImages(cpu, B, 400 + i), opts: i % 2 ? { keepRate: 0.5 } : {} }));
  const together = await Promise.all(jobs.map((j) => gpu.forward(j.input, j.opts)));
  for (const [i, j] of jobs.entries()) {
    const want = await cpu.forward(j.input, j.opts);
    checkLogits(t, `f32 concurrent batch ${i} (B=${j.input.shape[0]})`, want, together[i], LOGIT_TOL.f32);
    checkKept(t, `f32 concurrent batch ${i}`, want, together[i]);
  }
  cpu.dispose();
  gpu.dispose();
});

test('graph replays give the eager pass results; profile mode matches too', async (t) => {
  const gpu = await loadModel(tinyModel, { ...tinyOptions, device: 'cuda', precision: 'f32', keepRate: 0.7 });
  const input = randomImages(gpu, 4, 21);
  // First pass of a shape runs eagerly, the second captures a graph, the third replays it.
  const runs = [];
  for (let i = 0; i < 4; i++) runs.push(await gpu.forward(input));
  for (let i = 1; i < runs.length; i++) {
    t.ok(same(Array.from(runs[i].logits), Array.from(runs[0].logits)), `pass ${i + 1} logits bit-identical to the eager first pass`);
    t.ok(runs[i].kept.every((k, b) => same(Array.from(k.tokens), Array.from(runs[0].kept[b].tokens))), `pass ${i + 1} kept tokens identical`);
  }
  const prof = await gpu.forward(input, { profile: true });
  t.ok(same(Array.from(prof.logits), Array.from(runs[0].logits)), 'profiled pass logits identical');
  const p = prof.profile;
  t.ok(p.patchEmbed > 0 && p.head > 0, `patchEmbed ${p.patchEmbed.toFixed(4)} ms, head ${p.head.toFixed(4)} ms`);
  const drops = new Set(prof.kept.map((k) => k.block));
  const bad = p.blocks.filter((b) => !['ln1', 'qkv', 'attention', 'proj', 'ln2', 'fc1', 'fc2'].every((op) => b[op] > 0) ||
    (drops.has(b.block) ? !(b.reorganise > 0) : b.reorganise !== 0));
  t.deepEqual(bad.map((b) => b.block), [], 'every op has a positive time; reorganise only on dropping blocks');
  gpu.dispose();
});

test('dispose while idle, and while a batch is in flight', async (t) => {
  for (let i = 0; i < 3; i++) {
    const m = await loadModel(tinyModel, { ...tinyOptions, device: 'cuda', streams: 1 + i });
    await m.forward(randomImages(m, 2, i));
    m.dispose();
    t.ok(m.disposed, `model ${i} disposed after use`);
    await rejects(t, m.forward(randomImages(m, 1, 0)), DisposedError, 'forward after dispose rejects with DisposedError');
  }
  const m = await loadModel(tinyModel, { ...tinyOptions, device: 'cuda' });
  const input = randomImages(m, 16, 5);
  const pending = m.forward(input);
  m.dispose();
  const out = await pending;
  t.equal(out.logits.length, 16 * 10, 'the batch in flight completes after dispose()');
  t.ok(out.logits.every(Number.isFinite), 'with finite logits');
  const idle = await loadModel(tinyModel, { ...tinyOptions, device: 'cuda' });
  idle.dispose();
  t.ok(idle.disposed, 'a model that never ran disposes');
});

test('bad requests on CUDA are typed errors, and the model keeps working', async (t) => {
  const m = await loadModel(tinyModel, { ...tinyOptions, device: 'cuda', precision: 'f32' });
  const input = randomImages(m, 2, 9);
  await rejects(t, m.forward(input, { keepCounts: [500, 10, 5] }), (e) => e.code === 'EVIT_BAD_OPTIONS', 'keeping more tokens than exist');
  await rejects(t, m.forward({ data: input.data.subarray(1), shape: input.shape }), (e) => e.code === 'EVIT_BAD_INPUT', 'wrong data length');
  const ok = await m.forward(input);
  t.ok(ok.logits.every(Number.isFinite), 'a good batch after the bad ones runs');
  m.dispose();
});
