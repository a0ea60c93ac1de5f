'use strict';
// The CUDA kernels' host-testable logic, run on the CPU through binding.testing.cudaHost: the same
// __host__ __device__ helpers the kernels call (cuda/topk_order.h, cuda/device_math.h,
// cuda/tile_index.h). No GPU needed; these run in every build.
const test = require('tape');
const { loadBinding } = require('../dist/native');
const ref = require('./helpers/reference');

const binding = loadBinding();
const host = binding.testing.cudaHost;
const ops = binding.testing.ops;

/** Scores with many exact ties: values drawn from a handful of levels. */
function tiedScores(rand, n, levels) {
  const s = new Float32Array(n);
  for (let i = 0; i < n; i++) s[i] = Math.floor(rand() * levels) / levels;
  return s;
}

// ---------------------------------------------------------------------------------------------
test('topk ranking (rank keys + bitonic network) equals the CPU op and the reference', (t) => {
  const rand = ref.mulberry32(41);
  // Awkward row lengths around the network's power-of-two padding; 196/139/99 are DeiT token counts.
  for (const M of [1, 2, 3, 7, 8, 9, 99, 139, 196, 197, 255, 256, 257, 600, 1023]) {
    for (const B of [1, 3]) {
      for (const s of [ref.uniform(rand, B * M), tiedScores(rand, B * M, 5)]) {
        for (const k of new Set([1, Math.ceil(0.7 * M), M - 1 || 1, M])) {
          const got = Array.from(host.topk(s, B, M, k));
          const want = ref.topk(s, B, M, k);
          const cpu = Array.from(ops.topk(s, B, M, k));
          if (JSON.stringify(got) !== JSON.stringify(want) || JSON.stringify(cpu) !== JSON.stringify(want)) {
            t.deepEqual(got, want, `M=${M} B=${B} k=${k}`);
            return t.end();
          }
        }
      }
    }
  }
  t.pass('every row length, batch, tie pattern and k agrees');
  t.end();
});

test('topk ranking: NaN below everything, -0 ties +0, infinities in place', (t) => {
  t.deepEqual(Array.from(host.topk(new Float32Array([NaN, 1, NaN, -Infinity]), 1, 4, 4)), [1, 3, 0, 2], 'NaN below -Infinity');
  t.deepEqual(Array.from(host.topk(new Float32Array([-0, 0, -0]), 1, 3, 3)), [0, 1, 2], '-0 and +0 tie by index');
  t.deepEqual(Array.from(host.topk(new Float32Array(7).fill(NaN), 1, 7, 7)), [0, 1, 2, 3, 4, 5, 6], 'all NaN: index order');
  const special = new Float32Array([Infinity, -1e-38, 1e-45, -Infinity, 3.4e38, -0, NaN, 1e-45, 0]);
  const M = special.length;
  for (let k = 1; k <= M; k++) {
    t.deepEqual(Array.from(host.topk(special, 1, M, k)), ref.topk(special, 1, M, k), `special values, k=${k}`);
  }
  t.end();
});

test('head mean: heads summed in order in fp32, then divided, bit-for-bit', (t) => {
  const rand = ref.mulberry32(7);
  for (const [B, H, N] of [[1, 1, 2], [2, 3, 197], [3, 6, 140], [1, 12, 51], [2, 7, 33]]) {
    const probs = ref.uniform(rand, B * H * N, 0, 1);
    const got = host.headMean(probs, B, H, N);
    const want = new Float32Array(B * (N - 1));
    for (let b = 0; b < B; b++) {
      for (let j = 1; j < N; j++) {
        let acc = 0;
        for (let h = 0; h < H; h++) acc = Math.fround(acc + probs[(b * H + h) * N + j]);
        want[b * (N - 1) + j - 1] = Math.fround(acc / H);
      }
    }
    t.ok(got.every((v, i) => Object.is(v, want[i])), `B=${B} heads=${H} N=${N}`);
  }
  t.end();
});

test('head mean reproduces the CPU attention op\'s scores bit-for-bit from the same probabilities', (t) => {
  // The CPU op's per-head class rows come from running each head alone (heads = 1, whose
  // "mean" is the row itself); the head mean of those rows must equal the multi-head scores.
  const rand = ref.mulberry32(12);
  for (const [B, H, d, N] of [[2, 3, 16, 197], [1, 4, 32, 65], [2, 2, 24, 50]]) {
    const C = H * d;
    const qkv = ref.uniform(rand, B * N * 3 * C, -2, 2);
    const scores = ops.attention(qkv, B, N, H, d, true).scores;
    const probs = new Float32Array(B * H * N);
    for (let h = 0; h < H; h++) {
      const one = new Float32Array(B * N * 3 * d);
      for (let r = 0; r < B * N; r++) {
        for (let part = 0; part < 3; part++) {
          one.set(qkv.subarray(r * 3 * C + part * C + h * d, r * 3 * C + part * C + h * d + d), r * 3 * d + part * d);
        }
      }
      const row = ops.attention(one, B, N, 1, d, true).scores;
      for (let b = 0; b < B; b++) probs.set(row.subarray(b * (N - 1), (b + 1) * (N - 1)), (b * H + h) * N + 1);
    }
    const got = host.headMean(probs, B, H, N);
    const bad = got.findIndex((v, i) => !Object.is(v, scores[i]));
    t.equal(bad, -1, `B=${B} heads=${H} d=${d} N=${N}${bad >= 0 ? `: element ${bad} is ${got[bad]}, CPU ${scores[bad]}` : ''}`);
  }
  t.end();
});

test('GELU (erf form used by the GEMM epilogue) against the float64 reference', (t) => {
  const x = new Float32Array(4001);
  for (let i = 0; i < x.length; i++) x[i] = -10 + (20 * i) / (x.length - 1);
  const got = host.gelu(x);
  let worst = 0;
  let at = -1;
  for (let i = 0; i < x.length; i++) {
    const want = ref.gelu(x[i]);
    // erfc keeps relative accuracy in the negative tail, so the bound is relative to gelu itself:
    // 8 ulp, plus the rounding of y = x/√2 that erfc(y) ~ e^(-y²) amplifies by 2y².
    const y = x[i] < 0 ? -x[i] / Math.SQRT2 : 0;
    const err = Math.abs(got[i] - want) / (1e-38 + (8 + 2 * y * y) * 2 ** -23 * Math.abs(want));
    if (err > worst) [worst, at] = [err, i];
  }
  t.ok(worst <= 1, `within (8 + 2y²) ulp of gelu(x) on [-10, 10] (worst at x=${x[at]}: ${worst.toFixed(3)} of the tolerance)`);
  t.end();
});

// ---------------------------------------------------------------------------------------------
// Every output element of a GEMM written exactly once, for M not a multiple of the tile
// (token counts after dropping), N down to the 10-class head, K down to the 48-wide fixture.
const GEMM_SHAPES = [
  [1, 8, 8], [197, 384, 48], [141, 10, 48], [4 * 141, 1536, 384], [4 * 100, 384, 1536], [127, 129, 40], [300, 1000, 72],
];

test('tensor-core GEMM tiling: coverage, cp.async loads, ldmatrix fragments, no bank conflicts', (t) => {
  for (const shape of ['128x128', '128x64', '64x64']) {
    for (const [M, N, K] of GEMM_SHAPES) {
      const r = host.mmaTiling(M, N, K, shape);
      const ok = r.outElements === M * N && r.outMissed === 0 && r.outRepeated === 0 && r.kMissed === 0 && r.kRepeated === 0;
      t.ok(ok, `${shape} M=${M} N=${N} K=${K}: every output once (missed ${r.outMissed}, repeated ${r.outRepeated}), every k once`);
    }
    const r = host.mmaTiling(128, 128, 32, shape);
    t.equal(r.outOutside, 0, `${shape}: a full tile writes nothing out of range`);
    t.equal(r.loadMissed + r.loadRepeated, 0, `${shape}: each 16-byte chunk of a tile is copied by exactly one thread`);
    t.equal(r.fragmentErrors, 0, `${shape}: every ldmatrix lane receives the elements mma.m16n8k16 expects`);
    t.equal(r.bankConflicts, 0, `${shape}: the swizzle makes every ldmatrix phase conflict-free`);
    t.equal(r.pairErrors, 0, `${shape}: accumulator registers (r, r + 1) are adjacent columns of one row (paired stores)`);
  }
  t.end();
});

test('split-K: the splits cover every k exactly once, none empty', (t) => {
  // K = 200: 7 k-slices as 4 + 3, 3 + 3 + 1, 2 + 2 + 2 + 1; K = 1536: 48 slices in 4 x 12;
  // K = 72 asked for 4 splits: 3 slices of one, so three splits.
  for (const [K, splits, used] of [[200, 2, 2], [200, 3, 3], [200, 4, 4], [1536, 4, 4], [768, 3, 3], [72, 4, 3], [8, 4, 1]]) {
    const r = host.mmaTiling(64, 64, K, '64x64', splits);
    t.ok(r.kMissed === 0 && r.kRepeated === 0 && r.emptySplits === 0 && r.splits === used,
      `K=${K} in ${splits} splits: ${r.splits} used (want ${used}), every k once (missed ${r.kMissed}, repeated ${r.kRepeated})`);
  }
  t.end();
});

test('SIMT GEMM tiling: coverage of outputs and of each k-slice load', (t) => {
  for (const [M, N] of [...GEMM_SHAPES.map(([M, N]) => [M, N]), [1, 1], [65, 63]]) {
    const r = host.simtTiling(M, N);
    t.ok(r.outElements === M * N && r.outMissed === 0 && r.outRepeated === 0, `M=${M} N=${N}: every output once`);
  }
  const r = host.simtTiling(64, 64);
  t.equal(r.loadMissed + r.loadRepeated + r.loadOutside, 0, 'each element of a 64 × 16 slice is loaded by one thread');
  t.end();
});

test('attention tiling: every output and every score of every block written exactly once', (t) => {
  for (const N of [2, 15, 16, 17, 63, 64, 65, 141, 197, 600]) {
    for (const d of [8, 24, 64, 72, 128]) {
      const r = host.attentionTiling(N, d);
      const ok = r.outElements === N * d && r.outMissed === 0 && r.outRepeated === 0 && r.scoreMissed === 0 && r.scoreRepeated === 0;
      if (!ok) {
        t.fail(`N=${N} headDim=${d}: out missed ${r.outMissed} repeated ${r.outRepeated}; scores missed ${r.scoreMissed} repeated ${r.scoreRepeated}`);
        return t.end();
      }
    }
  }
  t.pass('N in 2..600 (partial row blocks and key chunks), headDim 8..128');
  t.end();
});

test('tensor-core attention: K/V staging, ldmatrix(.trans) fragments, score rows, no bank conflicts', (t) => {
  for (const N of [2, 17, 64, 65, 141, 197, 600]) {
    for (const d of [16, 32, 48, 64, 80, 128]) {
      const r = host.attentionMmaTiling(N, d);
      const ok = r.fragmentErrors === 0 && r.bankConflicts === 0 && r.stagingErrors === 0 && r.scoreGaps === 0 &&
        r.probGaps === 0 && r.outElements === N * d && r.outMissed === 0 && r.outRepeated === 0;
      if (!ok) {
        t.fail(`N=${N} headDim=${d}: ${JSON.stringify(r)}`);
        return t.end();
      }
    }
  }
  t.pass('N in 2..600, headDim 16..128: every fragment as mma expects, every score and output once');
  t.end();
});

test('cudaHost validates its arguments', (t) => {
  t.throws(() => host.topk(new Float32Array(5), 1, 5, 6), /k must be an integer in \[1, 5\]/, 'k > M');
  t.throws(() => host.headMean(new Float32Array(5), 1, 2, 3), /probs has 5 elements, expected 6/, 'probs length');
  t.throws(() => host.mmaTiling(8, 8, 8, '32x32'), /shape must be/, 'unknown tile shape');
  t.throws(() => host.mmaTiling(8, 8, 8, '64x64', 0), /splits/, 'zero splits');
  t.throws(() => host.mmaTiling(8, 8, 12, '64x64'), /K must be a multiple of 8/, 'K the tensor-core kernel never takes');
  t.end();
});

// ---------------------------------------------------------------------------------------------
test('cudaOps say clearly why they cannot run without a CUDA device', (t) => {
  const info = binding.backendInfo().cuda;
  const { cudaOps } = binding.testing;
  if (!info.compiled) {
    t.equal(cudaOps, undefined, 'a build without CUDA has no cudaOps');
    return t.end();
  }
  if (info.devices.length > 0) {
    t.pass('a CUDA device is present: the kernels are tested by the GPU suite');
    return t.end();
  }
  const x = new Float32Array(8);
  const calls = {
    layerNorm: () => cudaOps.layerNorm(x, 1, 8, x, x, 1e-6, 'f32'),
    linear: () => cudaOps.linear(x, 1, 8, x, new Float32Array(1), 1, 'bias', 'f16'),
    convert: () => cudaOps.convert(x, 'bf16'),
  };
  for (const [name, call] of Object.entries(calls)) {
    try {
      call();
      t.fail(`${name} returned without a device`);
    } catch (err) {
      t.equal(err.code, 'EVIT_NO_CUDA_DEVICE', `${name}: ${err.code}: ${err.message}`);
    }
  }
  t.end();
});
