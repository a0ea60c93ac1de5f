'use strict';
// The emulator's counting flavour and sampler (test/simt/tests/costs_test.cu): global bytes,
// unique sectors and mma.sync counts of known kernels, sampled launches against full ones;
// and the cost model's arithmetic (bench/gpu-model/model.js) against hand-computed values.
const test = require('tape');
const { build, runChecks } = require('./simt/tape');
const { KERNEL_SOURCES } = require('./simt/programs');
const m = require('../bench/gpu-model/model');

test('SIMT emulator: counting and sampling', async (t) => {
  const exe = await build(t, {
    name: 'simt_costs', flavour: 'count', units: [...KERNEL_SOURCES, 'test/simt/tests/costs_test.cu'], include: ['cuda', 'test/simt/tests'],
  });
  if (exe) runChecks(t, exe, { minChecks: 20 });
});

const H200 = m.DEVICES.h200;

test('cost model: occupancy and wave quantisation', (t) => {
  // 128 threads, 24 KiB shared, 128 registers: threads allow 16, shared 228/25 = 9, registers 65536/16384 = 4.
  t.equal(m.blocksPerSM(H200, 128, 24 * 1024, 128), 4);
  // 256 threads, no shared memory, 32 registers: threads 8, registers 8, shared 228.
  t.equal(m.blocksPerSM(H200, 256, 0, 32), 8);
  // 86 KiB shared: 228 / 87 = 2.
  t.equal(m.blocksPerSM(H200, 128, 86 * 1024, 128), 2);
  t.equal(m.blocksPerSM(H200, 1024, 200 * 1024, 128), 0, 'a block that fits nowhere');
  // 1000 blocks at 4 per SM on 132 SMs: 528 slots, 2 waves, 1000 / 1056.
  let w = m.waveQuantisation(1000, 132, 4);
  t.deepEqual([w.slots, w.waves], [528, 2]);
  t.ok(Math.abs(w.efficiency - 1000 / 1056) < 1e-12);
  // 24 blocks: one per SM on 24 SMs of 132.
  w = m.waveQuantisation(24, 132, 4);
  t.deepEqual([w.resident, w.slots, w.waves], [1, 132, 1]);
  t.ok(Math.abs(w.efficiency - 24 / 132) < 1e-12);
  // 200 blocks: 2 resident per SM (ceil(200/132)), 264 slots, one wave.
  w = m.waveQuantisation(200, 132, 4);
  t.deepEqual([w.resident, w.slots, w.waves], [2, 264, 1]);
  t.throws(() => m.waveQuantisation(10, 132, 0), /does not fit/);
  t.end();
});

test('cost model: a launch time by hand', (t) => {
  // A GEMM launch of 528 blocks (one full wave at 4 per SM), 2^20 mma: 4.295e9 FLOPs at
  // 0.62 x 989 TFLOPS = 7.0044 us; 8 MB unique at 4.8 TB/s = 1.6667 us; 16 MB block sectors at
  // 5.5 TB/s = 2.9127 us; compute bound, plus the 2 us graph node.
  const l = {
    grid: [528, 1, 1], threads: [128, 1, 1], smem: 24 * 1024, mma: 1 << 20, sampled: false,
    readSectors: 8e6 / 32 / 2, writeSectors: 8e6 / 32 / 2, blockReadSectors: 16e6 / 32, blockWriteSectors: 0,
    readBytes: 0, writeBytes: 0,
  };
  const r = m.launchTime(H200, l);
  t.equal(r.efficiency, 1);
  t.ok(Math.abs(r.computeUs - (1 << 20) * 4096 / (0.62 * 989e12) * 1e6) < 1e-9, `compute ${r.computeUs}`);
  t.ok(Math.abs(r.hbmUs - 8e6 / 4.8e12 * 1e6) < 1e-9, `hbm ${r.hbmUs}`);
  t.ok(Math.abs(r.l2Us - 16e6 / 5.5e12 * 1e6) < 1e-9, `l2 ${r.l2Us}`);
  t.equal(r.bound, 'compute');
  t.ok(Math.abs(r.us - (r.computeUs + 2)) < 1e-9);
  t.ok(Math.abs(m.launchTime(H200, l, { graph: false }).us - (r.computeUs + 4)) < 1e-9, 'eager launch: 4 us');
  // One block of 256 threads moving 1 MB: it draws 64 B x 1.98 GHz = 126.72 GB/s, not 4.8 TB/s.
  const one = { ...l, grid: [1, 1, 1], threads: [256, 1, 1], smem: 0, mma: 0, readSectors: 1e6 / 32, writeSectors: 0, blockReadSectors: 1e6 / 32 };
  const o = m.launchTime(H200, one);
  t.ok(Math.abs(o.hbmUs - 1e6 / 126.72e9 * 1e6) < 1e-6, `one block: ${o.hbmUs} us`);
  // Sampled: unique bytes are the span, capped by the blocks' own sectors.
  t.equal(m.uniqueBytes({ sampled: true, readSpanSectors: 100, readSectors: 10, blockReadSectors: 60, writeSpanSectors: 5, writeSectors: 5, blockWriteSectors: 5 }), 32 * 65);
  t.end();
});

test('cost model: a partial last wave runs on the SMs it occupies', (t) => {
  // 297 blocks of 8 warps, 2 per SM (128 registers): one wave of 264, then 33 blocks alone on 33
  // SMs, each at half rate (8 of 16 warps): compute = T · (264 + 33 · 4 · 2) / 297 with T the
  // whole launch's tensor time at full rate. Traffic of the tail is drawn by 33 SMs only.
  const l = {
    grid: [297, 1, 1], threads: [256, 1, 1], smem: 48 * 1024, mma: 297 * 4096, sampled: false,
    readSectors: 0, writeSectors: 0, blockReadSectors: 297 * 1e4, blockWriteSectors: 0, readBytes: 0, writeBytes: 0,
  };
  const r = m.launchTime(H200, l);
  const T = 297 * 4096 * 4096 / (0.62 * 989e12) * 1e6;
  t.deepEqual([r.slots, r.waves], [264, 2]);
  t.ok(Math.abs(r.computeUs - T * (264 + 33 * 8) / 297) < 1e-9, `compute ${r.computeUs}`);
  const perSM = 64 * 1.98e9;  // bytes per second one SM draws
  const l2 = 264 * 32e4 / 5.5e12 + 33 * 32e4 / Math.min(5.5e12, 33 * perSM);
  t.ok(Math.abs(r.l2Us - l2 * 1e6) < 1e-9, `l2 ${r.l2Us}`);
  t.end();
});

test('cost model: a pass, its copy and two streams', (t) => {
  const l = {
    grid: [528, 1, 1], threads: [128, 1, 1], smem: 24 * 1024, mma: 1 << 20, sampled: false, op: 'fc1', block: 0,
    readSectors: 0, writeSectors: 0, blockReadSectors: 0, blockWriteSectors: 0, readBytes: 0, writeBytes: 0,
  };
  const pass = { batch: 8, keep: 1, launches: [l, { ...l, op: 'reorganise' }], copies: [{ kind: 'h2d', bytes: 1e6, pinned: false }, { kind: 'd2h', bytes: 4000, pinned: true }] };
  const r = m.passTime(H200, pass);
  const k = m.launchTime(H200, l).us;
  t.ok(Math.abs(r.gpuUs - 2 * k) < 1e-9);
  t.ok(Math.abs(r.copyUs - 1e6 / 20e9 * 1e6) < 1e-9, 'pageable copy at 20 GB/s: 50 us');
  t.equal(r.copyHidden, false, `50 us copy against ${r.gpuUs.toFixed(1)} us of kernels`);
  t.ok(Math.abs(r.imgPerSec - 8 / (50e-6)) < 1e-6, 'two streams: bound by the copy');
  t.ok(Math.abs(r.reorgShare - 0.5) < 1e-12, 'reorganisation: half of its block');
  t.end();
});
