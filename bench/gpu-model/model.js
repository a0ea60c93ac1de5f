'use strict';
// The GPU cost model: per-launch counts from the SIMT emulator (bench/gpu-model/deit_costs.cc)
// turned into predicted kernel times on a named device. A model, not a measurement: see
// docs/BENCHMARKS.md, "GPU cost model", for the formula, the constants and how far off it is.

const KIB = 1024;

// Device constants (vendor datasheets; the L2 bandwidths and the mma.sync fractions are the
// commonly reported measured figures, not datasheet numbers: see docs/BENCHMARKS.md).
// tensorTflops: dense f16/bf16 with f32 accumulation. mmaFraction (f): the share of it a
// hand-written mma.sync + cp.async kernel reaches. On Hopper mma.sync is the legacy path (full
// rate needs wgmma + TMA); about 60-65% of dense peak is the reported ceiling, so 0.62. On
// Ampere and Ada mma.sync is the native tensor-core instruction; good mma.sync GEMMs reach
// 75-85% of peak, so 0.75.
const DEVICES = {
  h100: {
    name: 'H100 SXM', sms: 132, tensorTflops: 989, mmaFraction: 0.62, clockGHz: 1.98, hbmTBs: 3.35, l2TBs: 5.5, l2MB: 50,
    smemPerSM: 228 * KIB, regsPerSM: 65536, maxThreadsPerSM: 2048, maxBlocksPerSM: 32, pcieGBs: { pinned: 50, pageable: 20 },
  },
  h200: {
    name: 'H200', sms: 132, tensorTflops: 989, mmaFraction: 0.62, clockGHz: 1.98, hbmTBs: 4.8, l2TBs: 5.5, l2MB: 50,
    smemPerSM: 228 * KIB, regsPerSM: 65536, maxThreadsPerSM: 2048, maxBlocksPerSM: 32, pcieGBs: { pinned: 50, pageable: 20 },
  },
  a100: {
    name: 'A100 SXM 80GB', sms: 108, tensorTflops: 312, mmaFraction: 0.75, clockGHz: 1.41, hbmTBs: 2.04, l2TBs: 4.0, l2MB: 40,
    smemPerSM: 164 * KIB, regsPerSM: 65536, maxThreadsPerSM: 2048, maxBlocksPerSM: 32, pcieGBs: { pinned: 25, pageable: 10 },
  },
  rtx4090: {
    name: 'RTX 4090', sms: 128, tensorTflops: 165, mmaFraction: 0.75, clockGHz: 2.52, hbmTBs: 1.008, l2TBs: 3.5, l2MB: 72,
    smemPerSM: 100 * KIB, regsPerSM: 65536, maxThreadsPerSM: 1536, maxBlocksPerSM: 24, pcieGBs: { pinned: 25, pageable: 10 },
  },
};

// Fixed cost per kernel: in a CUDA graph a kernel node costs about 2 us of dispatch, ramp-up
// and drain on the device whatever its size; launched eagerly the host's ~4 us per launch
// (cudaLaunchKernelEx through the runtime) is the floor instead when kernels are short.
const GRAPH_NODE_US = 2;
const EAGER_LAUNCH_US = 4;
// Registers per thread assumed for occupancy (the emulator cannot count them): 128 for the
// tensor-core kernels (their fragments and accumulators), 32 for the rest.
const REGS_MMA = 128;
const REGS_OTHER = 32;
// Shared memory the driver reserves per block (sm_80+).
const SMEM_RESERVED = 1 * KIB;
const FLOPS_PER_MMA = 2 * 16 * 8 * 16;  // one warp's mma.sync.m16n8k16
// What one SM can move to or from L2 per clock: a grid on few SMs gets that, not 1/SMs of the chip's bandwidth.
const SM_BYTES_PER_CLOCK = 64;

/** Resident blocks per SM for a launch: the tightest of threads, shared memory, registers, block slots. */
function blocksPerSM(dev, threadsPerBlock, smemBytes, regsPerThread) {
  const warpsThreads = Math.ceil(threadsPerBlock / 32) * 32;
  const byThreads = Math.floor(dev.maxThreadsPerSM / warpsThreads);
  const bySmem = Math.floor(dev.smemPerSM / (smemBytes + SMEM_RESERVED));
  const byRegs = Math.floor(dev.regsPerSM / (warpsThreads * regsPerThread));
  return Math.max(0, Math.min(byThreads, bySmem, byRegs, dev.maxBlocksPerSM));
}

/**
 * Wave quantisation of a grid: a launch of `blocks` blocks with `perSM` resident per SM runs
 * in waves of sms × perSM blocks; the last wave may be partly empty. A grid smaller than one
 * full wave spreads over the SMs first, so the slots counted are min(perSM, ceil(blocks/sms))
 * per SM. efficiency = blocks / (waves × slots).
 */
function waveQuantisation(blocks, sms, perSM) {
  if (perSM < 1) throw new Error('a block that does not fit on an SM');
  const resident = Math.min(perSM, Math.ceil(blocks / sms));
  const slots = sms * resident;
  const waves = Math.ceil(blocks / slots);
  return { waves, slots, resident, efficiency: blocks / (waves * slots) };
}

/**
 * Bandwidth a wave can draw, in TB/s: the chip's, or what its busy SMs (the fraction `busy` of
 * them) can pull at SM_BYTES_PER_CLOCK each when it occupies only some of them.
 */
function drawnBandwidth(dev, chipTBs, busy) {
  const perSM = SM_BYTES_PER_CLOCK * dev.clockGHz * 1e9 / 1e12;
  return Math.min(chipTBs, busy * dev.sms * perSM);
}

/** Unique bytes HBM must move for a launch: exact when every block ran, else the span estimate (capped by the blocks' own sectors). */
function uniqueBytes(l) {
  if (!l.sampled) return 32 * (l.readSectors + l.writeSectors);
  const read = Math.min(32 * l.readSpanSectors, Math.max(32 * l.blockReadSectors, 32 * l.readSectors));
  const write = Math.min(32 * l.writeSpanSectors, Math.max(32 * l.blockWriteSectors, 32 * l.writeSectors));
  return read + write;
}

// Warps per SM a tensor-core kernel needs before its mma.sync issue rate stops growing; fewer
// resident warps (a tail wave of one small block per SM) leave the tensor cores partly idle. The
// same figure as the GEMM tile rule's (cuda/gemm_tiles.h), so the two agree on what a wave costs.
const SATURATING_WARPS = 16;

/**
 * Predicted time of one launch, in microseconds, with its parts. The grid runs in waves of
 * `slots` blocks (waveQuantisation), the last one maybe partial; each wave takes the larger of
 * its tensor work at the rate of the SMs it occupies (scaled down when they hold too few warps)
 * and its L2 and HBM traffic at what those SMs can draw. Per block, the launch's counts divided
 * evenly (the sampler scales them the same way).
 */
function launchTime(dev, l, { graph = true } = {}) {
  const blocks = l.grid[0] * l.grid[1] * l.grid[2];
  const threads = l.threads[0] * l.threads[1] * l.threads[2];
  const regs = l.mma > 0 ? REGS_MMA : REGS_OTHER;
  const perSM = blocksPerSM(dev, threads, l.smem, regs);
  const wq = waveQuantisation(blocks, dev.sms, perSM);
  const flops = l.mma * FLOPS_PER_MMA;
  const unique = uniqueBytes(l);
  const l2Bytes = 32 * (l.blockReadSectors + l.blockWriteSectors);
  const warpsPerBlock = Math.ceil(threads / 32);
  const parts = { computeUs: 0, hbmUs: 0, l2Us: 0, bodyUs: 0 };
  const wave = (n, count) => {
    const busy = Math.min(dev.sms, n), perBusy = Math.ceil(n / dev.sms);
    const share = n / blocks;
    const saturation = l.mma > 0 ? Math.min(1, perBusy * warpsPerBlock / SATURATING_WARPS) : 1;
    const c = share * flops / (dev.mmaFraction * dev.tensorTflops * 1e12 * (busy / dev.sms) * saturation) * 1e6;
    // L2 <-> SM traffic: each block's unique sectors (L1 and shared memory serve the reuse inside a block).
    const h = share * unique / (drawnBandwidth(dev, dev.hbmTBs, busy / dev.sms) * 1e12) * 1e6;
    const t = share * l2Bytes / (drawnBandwidth(dev, dev.l2TBs, busy / dev.sms) * 1e12) * 1e6;
    parts.computeUs += count * c;
    parts.hbmUs += count * h;
    parts.l2Us += count * t;
    parts.bodyUs += count * Math.max(c, h, t);
  };
  const full = Math.floor(blocks / wq.slots), tail = blocks - full * wq.slots;
  if (full) wave(wq.slots, full);
  if (tail) wave(tail, 1);
  const { computeUs, hbmUs, l2Us, bodyUs } = parts;
  const fixedUs = graph ? GRAPH_NODE_US : EAGER_LAUNCH_US;
  const bound = computeUs >= hbmUs && computeUs >= l2Us ? 'compute' : hbmUs >= l2Us ? 'hbm' : 'l2';
  return { us: bodyUs + fixedUs, bodyUs, fixedUs, computeUs, hbmUs, l2Us, flops, bound, ...wq, perSM };
}

/**
 * A pass on a device: kernel time (graph replay), the host-to-device copy, and the steady-state
 * throughput with two streams (the copy of one batch overlaps the kernels of the other).
 */
function passTime(dev, pass, { graph = true, pinned } = {}) {
  const launches = pass.launches.map((l) => ({ ...l, t: launchTime(dev, l, { graph }) }));
  const gpuUs = launches.reduce((s, l) => s + l.t.us, 0);
  const h2d = pass.copies.filter((c) => c.kind === 'h2d');
  const h2dBytes = h2d.reduce((s, c) => s + c.bytes, 0);
  const srcPinned = pinned ?? h2d.every((c) => c.pinned);
  const copyUs = h2dBytes / ((srcPinned ? dev.pcieGBs.pinned : dev.pcieGBs.pageable) * 1e9) * 1e6;
  const byOp = {};
  const byBlock = {};
  const byBound = { compute: 0, hbm: 0, l2: 0 };
  for (const l of launches) {
    byOp[l.op] = (byOp[l.op] || 0) + l.t.us;
    byBound[l.t.bound] += l.t.us;
    if (l.block >= 0) {
      const b = (byBlock[l.block] ||= { us: 0, reorganiseUs: 0, attentionUs: 0 });
      b.us += l.t.us;
      if (l.op === 'reorganise') b.reorganiseUs += l.t.us;
      if (l.op === 'attention') b.attentionUs += l.t.us;
    }
  }
  const reorgBlocks = Object.entries(byBlock).filter(([, b]) => b.reorganiseUs > 0);
  const reorgShare = reorgBlocks.length ? Math.max(...reorgBlocks.map(([, b]) => b.reorganiseUs / b.us)) : 0;
  const reorgOfAttention = reorgBlocks.length ? Math.max(...reorgBlocks.map(([, b]) => b.reorganiseUs / b.attentionUs)) : 0;
  const overlappedUs = Math.max(gpuUs, copyUs);  // two streams, steady state
  return {
    batch: pass.batch, keep: pass.keep, input: pass.input || 'f32', launches: launches.length, gpuUs, copyUs, h2dBytes, srcPinned,
    copyShare: copyUs / (gpuUs + copyUs), copyHidden: copyUs <= gpuUs,
    imgPerSec: pass.batch / (overlappedUs * 1e-6), imgPerSecOneStream: pass.batch / ((gpuUs + copyUs) * 1e-6),
    reorgShare, reorgOfAttention, byOp, byBound, flops: launches.reduce((s, l) => s + l.t.flops, 0),
  };
}

module.exports = {
  DEVICES, GRAPH_NODE_US, EAGER_LAUNCH_US, REGS_MMA, REGS_OTHER, SATURATING_WARPS, SMEM_RESERVED, FLOPS_PER_MMA, SM_BYTES_PER_CLOCK,
  blocksPerSM, drawnBandwidth, waveQuantisation, uniqueBytes, launchTime, passTime,
};
