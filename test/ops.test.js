'use strict';
// The single CPU ops of the native addon against plain float64 references
// (test/helpers/reference.js), on awkward sizes, with seeded random inputs.
//
// Tolerance for float32 ops, unless a test says otherwise:
//   |got - ref| <= 1e-5 + 1e-5 * S
// where ref is the float64 result computed from the same float32 inputs and S is the
// float64 sum of |terms| making up that element (S = |ref| when no terms cancel; for
// LayerNorm S = |normalised·w| + |b|; for GELU outputs S includes max|gelu'| = 1.13).
// Ops that only move data (class token, kept tokens, origins, topk indices) must match exactly.
const test = require('tape');
const { loadBinding } = require('../dist/native');
const ref = require('./helpers/reference');

const binding = loadBinding();
const ops = binding.testing.ops;
const ATOL = 1e-5;
const RTOL = 1e-5;
const THREADS = binding.backendInfo().cpu.threads;

/** One assertion: every element within atol + rtol * scale of the float64 reference. */
function close(t, got, want, scale, msg, atol = ATOL, rtol = RTOL) {
  const r = ref.compare(got, want, scale, atol, rtol);
  if (r.lengthMismatch) {
    t.fail(`${msg}: length ${r.gotLength}, expected ${r.refLength}`);
    return;
  }
  t.ok(
    r.ok,
    r.ok
      ? `${msg} (max |err| ${r.maxErr.toExponential(2)})`
      : `${msg}: element ${r.at} is ${r.got}, expected ${r.want} (tolerance ${r.tol.toExponential(2)})`,
  );
}

/** One assertion: bitwise-equal float arrays (data movement, no arithmetic). */
function same(t, got, want, msg) {
  let bad = got.length === want.length ? -1 : -2;
  for (let i = 0; bad === -1 && i < want.length; i++) {
    if (!Object.is(got[i], Math.fround(want[i]))) bad = i;
  }
  if (bad === -2) t.fail(`${msg}: length ${got.length}, expected ${want.length}`);
  else if (bad >= 0) t.fail(`${msg}: element ${bad} is ${got[bad]}, expected ${want[bad]}`);
  else t.pass(msg);
}

/** Fisher-Yates shuffle of 0..n-1. */
function permutation(rand, n) {
  const p = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [p[i], p[j]] = [p[j], p[i]];
  }
  return p;
}

const rowsOf = (a, n) => Array.from({ length: a.length / n }, (_, i) => Array.from(a.slice(i * n, (i + 1) * n)));

// ---------------------------------------------------------------------------------------------
test('reference erf / GELU agree with tabulated values', (t) => {
  // erf values from Abramowitz & Stegun / mpmath; erfc(5) = 1.5374597944280349e-12.
  const table = [
    [0.5, 0.5204998778130465],
    [1, 0.8427007929497149],
    [2, 0.9953222650189527],
    [3, 0.9999779095030014],
    [4, 0.9999999845827421],
  ];
  for (const [x, v] of table) {
    t.ok(Math.abs(ref.erf(x) - v) < 1e-15 && Math.abs(ref.erf(-x) + v) < 1e-15, `erf(±${x})`);
  }
  t.ok(Math.abs(ref.erfc(5) / 1.5374597944280349e-12 - 1) < 1e-13, 'erfc(5) keeps full relative precision');
  t.equal(ref.gelu(0), 0, 'gelu(0) = 0');
  t.ok(Math.abs(ref.gelu(1) - 0.8413447460685429) < 1e-15, 'gelu(1) = Φ(1)');
  t.end();
});

// ---------------------------------------------------------------------------------------------
test('layerNorm matches the float64 two-pass reference on awkward shapes', (t) => {
  const rand = ref.mulberry32(11);
  for (const [rows, C] of [[1, 5], [2, 12], [3, 48], [7, 5], [13, 12], [50, 48], [197, 5]]) {
    const x = ref.uniform(rand, rows * C, -2, 3);
    const w = ref.uniform(rand, C, 0.5, 1.5);
    const b = ref.uniform(rand, C, -0.5, 0.5);
    const copy = x.slice();
    const got = ops.layerNorm(x, rows, C, w, b, 1e-6);
    const want = ref.layerNorm(x, rows, C, w, b, 1e-6);
    close(t, got, want.out, want.scale, `rows=${rows} C=${C}`);
    t.deepEqual(x, copy, `rows=${rows} C=${C}: input untouched`);
  }
  t.end();
});

test('layerNorm keeps full precision for rows with a large mean', (t) => {
  const rand = ref.mulberry32(12);
  for (const [C, offset, spread] of [[5, 1000, 1], [12, 1000, 1], [48, 1000, 1], [48, -1000, 0.5], [12, 10000, 4]]) {
    const rows = 3;
    const x = new Float32Array(rows * C);
    for (let i = 0; i < x.length; i++) x[i] = offset + spread * (2 * rand() - 1);
    const w = ref.uniform(rand, C, 0.5, 1.5);
    const b = ref.uniform(rand, C, -0.5, 0.5);
    const got = ops.layerNorm(x, rows, C, w, b, 1e-6);
    const want = ref.layerNorm(x, rows, C, w, b, 1e-6);
    close(t, got, want.out, want.scale, `C=${C}, values ${offset} ± ${spread}`);
  }
  t.end();
});

test('layerNorm eps: added to the variance inside the square root', (t) => {
  const rand = ref.mulberry32(13);
  const rows = 4;
  const C = 12;
  const x = ref.uniform(rand, rows * C, -0.05, 0.05); // variance ~8e-4: eps matters
  const w = ref.uniform(rand, C, 0.5, 1.5);
  const b = ref.uniform(rand, C, -0.5, 0.5);
  for (const eps of [0, 1e-6, 1e-3, 0.5, 2]) {
    const want = ref.layerNorm(x, rows, C, w, b, eps);
    close(t, ops.layerNorm(x, rows, C, w, b, eps), want.out, want.scale, `eps=${eps}`);
  }
  const small = ops.layerNorm(x, rows, C, w, b, 1e-6);
  const big = ops.layerNorm(x, rows, C, w, b, 0.5);
  t.ok(Math.abs(small[0] - big[0]) > 0.1, 'eps actually changes the result');

  // A constant row has zero variance: with eps > 0 the output is exactly b.
  const constant = new Float32Array(2 * C).fill(3.25);
  same(t, ops.layerNorm(constant, 2, C, w, b, 1e-6), [...b, ...b], 'constant rows give b');
  t.end();
});

// ---------------------------------------------------------------------------------------------
test('linear: bias, gelu and residual epilogues on awkward shapes', (t) => {
  const rand = ref.mulberry32(21);
  for (const [M, K, N] of [[1, 1, 1], [1, 5, 3], [2, 12, 7], [3, 48, 13], [7, 5, 50], [13, 37, 197], [50, 48, 5]]) {
    const x = ref.uniform(rand, M * K, -1, 1);
    const W = ref.uniform(rand, N * K, -1, 1);
    const b = ref.uniform(rand, N, -1, 1);
    const res = ref.uniform(rand, M * N, -3, 3);
    const resCopy = res.slice();
    for (const ep of ['bias', 'gelu', 'residual']) {
      const got = ops.linear(x, M, K, W, b, N, ep, ep === 'residual' ? res : undefined);
      const want = ref.linear(x, M, K, W, b, N, ep, res);
      close(t, got, want.out, want.scale, `M=${M} K=${K} N=${N} ${ep}`);
    }
    t.deepEqual(res, resCopy, `M=${M} K=${K} N=${N}: residual input untouched`);
  }
  t.end();
});

test('linear: column-split (few rows, many outputs) and row-split (many rows, few outputs) paths', (t) => {
  const rand = ref.mulberry32(22);
  // The kernel splits rows when M >= 128·threads or N < 16·threads, else columns in chunks of 16.
  const wide = Math.max(300, 16 * THREADS + 5);
  const tall = Math.max(300, 128 * THREADS + 3);
  const cases = [];
  for (let M = 1; M <= 5; M++) cases.push([M, M % 2 ? 12 : 48, wide]);
  cases.push([tall, 48, 7], [tall, 5, 13], [tall + 1, 12, wide]);
  for (const [M, K, N] of cases) {
    const path = M >= 128 * THREADS || N < 16 * THREADS ? 'rows' : 'columns';
    const x = ref.uniform(rand, M * K, -1, 1);
    const W = ref.uniform(rand, N * K, -1, 1);
    const b = ref.uniform(rand, N, -1, 1);
    const res = ref.uniform(rand, M * N, -3, 3);
    for (const ep of ['bias', 'gelu', 'residual']) {
      const got = ops.linear(x, M, K, W, b, N, ep, ep === 'residual' ? res : undefined);
      const want = ref.linear(x, M, K, W, b, N, ep, res);
      close(t, got, want.out, want.scale, `M=${M} K=${K} N=${N} ${ep} (${path} split, ${THREADS} threads)`);
    }
  }
  t.end();
});

test('linear gelu epilogue is exact-erf GELU over a wide pre-activation range', (t) => {
  const rand = ref.mulberry32(23);
  const M = 9;
  const K = 1;
  const N = 181;
  // x = 1, W = 0: pre-activation = b exactly, spanning [-9, 9].
  const x = new Float32Array(M * K).fill(1);
  const W = new Float32Array(N * K);
  const b = new Float32Array(N);
  for (let n = 0; n < N; n++) b[n] = -9 + n * 0.1 + (rand() - 0.5) * 0.01;
  const got = ops.linear(x, M, K, W, b, N, 'gelu');
  const want = new Float64Array(M * N);
  for (let m = 0; m < M; m++) for (let n = 0; n < N; n++) want[m * N + n] = ref.gelu(b[n]);
  close(t, got, want, null, 'gelu(b) for b in [-9, 9]');
  t.end();
});

// ---------------------------------------------------------------------------------------------
function qkvFor(rand, B, N, H, d, qkScale = 1.5) {
  const C = H * d;
  const qkv = new Float32Array(B * N * 3 * C);
  for (let i = 0; i < B * N; i++) {
    for (let c = 0; c < 3 * C; c++) {
      qkv[i * 3 * C + c] = (c < 2 * C ? qkScale : 1) * (2 * rand() - 1);
    }
  }
  return qkv;
}

const ATTENTION_SHAPES = [
  // [B, N, heads, headDim]
  [1, 2, 1, 4],
  [5, 2, 3, 16],
  [5, 3, 3, 4],
  [1, 7, 3, 16],
  [5, 13, 1, 16],
  [2, 50, 3, 4],
  [1, 197, 1, 4],
  [5, 197, 3, 16],
  // headDim a multiple of 16 takes the blocked SIMD kernel: N against the 6-row block and the
  // 16-column vector (N = 2, 20, 37, 50, 71, 72, 99, 197, 577), head dims of 1 to 8 vectors,
  // and a single (image, head) pair, whose rows are split over the workers.
  [1, 2, 2, 64],
  [3, 20, 6, 64],
  [2, 37, 2, 128],
  [2, 50, 1, 32],
  [3, 71, 6, 64],
  [1, 72, 3, 64],
  [1, 99, 2, 48],
  [1, 197, 1, 64],
  [2, 197, 6, 64],
  [1, 577, 1, 64],
  [1, 13, 3, 80],
];

test('attention: out = softmax(q·kᵀ/√d)·v per head, scores = head mean of prob row 0 without column 0', (t) => {
  const rand = ref.mulberry32(31);
  for (const [B, N, H, d] of ATTENTION_SHAPES) {
    const qkv = qkvFor(rand, B, N, H, d);
    const copy = qkv.slice();
    const want = ref.attention(qkv, B, N, H, d);
    const withScores = ops.attention(qkv, B, N, H, d, true);
    const without = ops.attention(qkv, B, N, H, d, false);
    const tag = `B=${B} N=${N} heads=${H} headDim=${d}`;
    close(t, withScores.out, want.out, want.scale, `${tag}: out`);
    // Probabilities are in [0, 1] with float32 softmax error ~1e-7 relative: atol 1e-6.
    close(t, withScores.scores, want.scores, null, `${tag}: scores`, 1e-6, 1e-5);
    t.notOk('scores' in without, `${tag}: withScores false has no scores field`);
    same(t, without.out, withScores.out, `${tag}: out identical with and without scores`);
    // Not renormalised: Σ_j scores[b][j] = 1 - mean_h p_h[0][0] < 1.
    let worst = 0;
    for (let b = 0; b < B; b++) {
      let sum = 0;
      for (let j = 0; j < N - 1; j++) sum += withScores.scores[b * (N - 1) + j];
      let p00 = 0;
      for (let h = 0; h < H; h++) p00 += want.probs[b][h][0][0];
      worst = Math.max(worst, Math.abs(sum - (1 - p00 / H)));
    }
    t.ok(worst < 1e-5, `${tag}: each row of scores sums to 1 - (class token's own share), |err| ${worst.toExponential(2)}`);
    t.deepEqual(qkv, copy, `${tag}: qkv untouched`);
  }
  t.end();
});

test('attention: v = 1 gives out = 1 (every probability row sums to 1)', (t) => {
  const rand = ref.mulberry32(32);
  for (const [B, N, H, d] of [[1, 2, 1, 4], [5, 7, 3, 4], [2, 197, 3, 16], [1, 13, 1, 64], [3, 71, 2, 64]]) {
    const C = H * d;
    const qkv = qkvFor(rand, B, N, H, d, 3);
    for (let i = 0; i < B * N; i++) qkv.fill(1, i * 3 * C + 2 * C, (i + 1) * 3 * C);
    const { out } = ops.attention(qkv, B, N, H, d, false);
    // Σ_j p[j]·1 over N float32 probabilities: rounding grows with N (the GEMM path, taken for
    // head dims that are not a multiple of 16, sums in whatever order OpenBLAS's kernel picks).
    const tol = Math.max(1e-6, N * 2 ** -24);
    close(t, out, new Float64Array(B * N * C).fill(1), null, `B=${B} N=${N} heads=${H} headDim=${d}`, tol, 0);
  }
  t.end();
});

test('attention: q = 0 gives uniform probabilities; large logits stay finite', (t) => {
  const rand = ref.mulberry32(33);
  {
    const [B, N, H, d] = [2, 13, 3, 4];
    const C = H * d;
    const qkv = qkvFor(rand, B, N, H, d);
    for (let i = 0; i < B * N; i++) qkv.fill(0, i * 3 * C, i * 3 * C + C);
    const { out, scores } = ops.attention(qkv, B, N, H, d, true);
    close(t, scores, new Float64Array(B * (N - 1)).fill(1 / N), null, 'scores = 1/N', 1e-7, 1e-6);
    const mean = new Float64Array(B * N * C);
    for (let b = 0; b < B; b++) {
      for (let c = 0; c < C; c++) {
        let s = 0;
        for (let j = 0; j < N; j++) s += qkv[(b * N + j) * 3 * C + 2 * C + c];
        for (let i = 0; i < N; i++) mean[(b * N + i) * C + c] = s / N;
      }
    }
    close(t, out, mean, null, 'out = mean of v over tokens');
  }
  {
    // Logits in the hundreds: softmax must subtract the row max. A float32 logit that large carries
    // an absolute error ~1e-5..1e-4, which becomes a relative error ~1e-4 of the probabilities: tolerance 1e-4.
    const [B, N, H, d] = [3, 50, 3, 16];
    const qkv = qkvFor(rand, B, N, H, d, 16);
    const got = ops.attention(qkv, B, N, H, d, true);
    t.ok(got.out.every(Number.isFinite) && got.scores.every(Number.isFinite), 'large logits: all finite');
    const want = ref.attention(qkv, B, N, H, d);
    close(t, got.out, want.out, want.scale, 'large logits: out', 1e-4, 1e-4);
    close(t, got.scores, want.scores, null, 'large logits: scores', 1e-4, 1e-4);
  }
  t.end();
});

// ---------------------------------------------------------------------------------------------
test('topk: descending by score, ties to the lower index, on rows full of ties', (t) => {
  const rand = ref.mulberry32(41);
  const levels = [0.125, 0.25, 0.5, 0.75];
  for (const M of [1, 2, 3, 7, 13, 50, 196]) {
    for (const B of [1, 5]) {
      const s = new Float32Array(B * M);
      for (let i = 0; i < s.length; i++) s[i] = levels[Math.floor(rand() * levels.length)];
      const ks = [...new Set([1, M - 2, M - 1, M])].filter((k) => k >= 1);
      for (const k of ks) {
        const got = ops.topk(s, B, M, k);
        t.ok(got instanceof Int32Array, `M=${M} B=${B} k=${k}: Int32Array`);
        t.deepEqual(Array.from(got), ref.topk(s, B, M, k), `M=${M} B=${B} k=${k}`);
      }
    }
  }
  t.end();
});

test('topk: distinct random rows, k = 1 and k = M, NaN ranks last, ±0 tie, ±Infinity', (t) => {
  const rand = ref.mulberry32(42);
  const B = 5;
  const M = 50;
  const s = ref.uniform(rand, B * M, 0, 1);
  for (const k of [1, 2, 25, 48, 49, 50]) t.deepEqual(Array.from(ops.topk(s, B, M, k)), ref.topk(s, B, M, k), `random rows, k=${k}`);
  const k1 = Array.from(ops.topk(s, B, M, 1));
  t.ok(new Set(k1).size > 1, 'rows are ranked independently');

  // NaN in random places, mixed with ties, infinities and signed zeros.
  const special = [NaN, NaN, Infinity, -Infinity, 0, -0, 0.5, 0.5, 1e-30, -1e-30];
  const t2 = new Float32Array(B * 13);
  for (let i = 0; i < t2.length; i++) t2[i] = special[Math.floor(rand() * special.length)];
  for (const k of [1, 5, 11, 12, 13]) t.deepEqual(Array.from(ops.topk(t2, B, 13, k)), ref.topk(t2, B, 13, k), `special values, k=${k}`);

  t.deepEqual(Array.from(ops.topk(new Float32Array([NaN, 1, NaN, -Infinity]), 1, 4, 4)), [1, 3, 0, 2], 'NaN below -Infinity, NaNs by index');
  t.deepEqual(Array.from(ops.topk(new Float32Array([-0, 0, -0]), 1, 3, 3)), [0, 1, 2], '-0 and +0 tie');
  t.deepEqual(Array.from(ops.topk(new Float32Array(7).fill(NaN), 1, 7, 7)), [0, 1, 2, 3, 4, 5, 6], 'all NaN: index order');
  t.deepEqual(Array.from(ops.topk(new Float32Array([2, 3, 3, 1, 3]), 1, 5, 2)), [1, 2], 'three-way tie at the top keeps the two lowest indices');
  t.end();
});

// ---------------------------------------------------------------------------------------------
test('gatherFuse: class token, kept tokens in idx order, fused token of raw scores appended last', (t) => {
  const rand = ref.mulberry32(51);
  for (const [B, N, C] of [[1, 2, 5], [5, 3, 12], [1, 7, 48], [5, 13, 5], [2, 50, 12], [5, 197, 48]]) {
    const x = ref.uniform(rand, B * N * C, -2, 2);
    const scores = ref.uniform(rand, B * (N - 1), 0, 2 / N);
    const ks = [...new Set([1, N - 2, N - 1])].filter((k) => k >= 1);
    for (const k of ks) {
      // idx in a shuffled (not sorted) order per row, so the output order must follow idx.
      const idx = new Int32Array(B * k);
      for (let b = 0; b < B; b++) idx.set(permutation(rand, N - 1).slice(0, k), b * k);
      for (const fuse of [true, false]) {
        const tag = `B=${B} N=${N} C=${C} k=${k} fuse=${fuse}`;
        const got = ops.gatherFuse(x, B, N, C, scores, idx, k, fuse);
        const want = ref.gatherFuse(x, B, N, C, scores, idx, k, fuse);
        const outN = 1 + k + (fuse ? 1 : 0);
        t.equal(got.out.length, B * outN * C, `${tag}: out has B·(1+k${fuse ? '+1' : ''})·C elements`);
        // Class and kept tokens are copies: bit-exact. The fused token is a sum: within tolerance.
        const moved = [];
        const movedWant = [];
        const fusedGot = [];
        const fusedWant = [];
        const fusedScale = [];
        for (let b = 0; b < B; b++) {
          for (let i = 0; i < outN * C; i++) {
            const at = b * outN * C + i;
            if (fuse && i >= (1 + k) * C) {
              fusedGot.push(got.out[at]);
              fusedWant.push(want.out[at]);
              fusedScale.push(want.scale[at]);
            } else {
              moved.push(got.out[at]);
              movedWant.push(want.out[at]);
            }
          }
        }
        same(t, moved, movedWant, `${tag}: class token and kept tokens copied exactly`);
        if (fuse) close(t, fusedGot, fusedWant, fusedScale, `${tag}: fused token`);
        t.deepEqual(Array.from(got.origins), want.origins, `${tag}: origins = idx${fuse ? ', then -1' : ''}`);
        t.ok(got.origins instanceof Int32Array, `${tag}: origins is an Int32Array`);
      }
    }
  }
  t.end();
});

test('gatherFuse: k = N-1 fuses nothing (zero token); negative raw scores are used as is', (t) => {
  const rand = ref.mulberry32(52);
  const [B, N, C] = [2, 7, 5];
  const x = ref.uniform(rand, B * N * C, -2, 2);
  const scores = ref.uniform(rand, B * (N - 1), -1, 1);
  const idx = new Int32Array([5, 0, 3, 1, 4, 2, 0, 1, 2, 3, 4, 5]);
  const got = ops.gatherFuse(x, B, N, C, scores, idx, N - 1, true);
  const outN = N + 1;
  for (let b = 0; b < B; b++) {
    same(t, got.out.slice((b * outN + N) * C, (b * outN + N + 1) * C), new Array(C).fill(0), `row ${b}: fused token is zero`);
  }
  const k = 2;
  const idx2 = new Int32Array([4, 1, 0, 5]);
  const want = ref.gatherFuse(x, B, N, C, scores, idx2, k, true);
  close(t, ops.gatherFuse(x, B, N, C, scores, idx2, k, true).out, want.out, want.scale, 'signed scores, not renormalised');
  t.end();
});

test('gatherFuse: bad idx and lengths throw errors naming the argument', (t) => {
  const [B, N, C, k] = [2, 5, 3, 2];
  const x = new Float32Array(B * N * C).fill(1);
  const s = new Float32Array(B * (N - 1)).fill(0.1);
  const good = new Int32Array([0, 1, 2, 3]);
  const call = (over) => () => {
    const a = { x, B, N, C, s, idx: good, k, fuse: true, ...over };
    return ops.gatherFuse(a.x, a.B, a.N, a.C, a.s, a.idx, a.k, a.fuse);
  };
  t.throws(call({ idx: new Int32Array([0, 1, 2, -1]) }), /^RangeError: idx\[3\] = -1 is out of range \[0, 4\)/, 'negative index');
  t.throws(call({ idx: new Int32Array([0, 4, 2, 3]) }), /^RangeError: idx\[1\] = 4 is out of range \[0, 4\)/, 'index = N-1 (class token excluded)');
  t.throws(call({ idx: new Int32Array([0, 1, 3, 3]) }), /^RangeError: idx repeats token 3 in row 1/, 'repeated index in a row');
  t.throws(call({ idx: new Int32Array([0, 1, 2]) }), /^RangeError: idx has 3 elements, expected 4/, 'idx too short');
  t.throws(call({ idx: new Float32Array([0, 1, 2, 3]) }), /^TypeError: idx must be an? Int32Array/, 'idx of the wrong type');
  t.throws(call({ x: new Float32Array(B * N * C - 1) }), /^RangeError: x has 29 elements, expected 30/, 'x too short');
  t.throws(call({ s: new Float32Array(B * N) }), /^RangeError: scores has 10 elements, expected 8/, 'scores with the class token');
  t.throws(call({ s: new Float64Array(B * (N - 1)) }), /^TypeError: scores must be an? Float32Array/, 'scores of the wrong type');
  t.throws(call({ k: 0 }), /^RangeError: k must be an integer in \[1, 4\]/, 'k = 0');
  t.throws(call({ k: N }), /^RangeError: k must be an integer in \[1, 4\]/, 'k = N (more than the N-1 patch tokens)');
  t.throws(call({ N: 1, x: new Float32Array(B * C), s: new Float32Array(0) }), /^RangeError: N must be an integer/, 'N = 1');
  // Errors leave the addon usable.
  t.deepEqual(Array.from(call({ fuse: false })().origins), [0, 1, 2, 3], 'still works after the errors');
  t.end();
});

// ---------------------------------------------------------------------------------------------
test('patchEmbed: stride-p convolution + bias + pos, class token = cls + pos[0]', (t) => {
  const rand = ref.mulberry32(61);
  // [B, inChans, gh, gw, p, C]
  for (const [B, ic, gh, gw, p, C] of [
    [1, 1, 2, 3, 4, 5],
    [5, 3, 2, 3, 4, 12],
    [2, 3, 3, 2, 4, 48],
    [1, 3, 1, 1, 4, 5],
    [2, 1, 2, 3, 1, 5],
    [1, 3, 14, 14, 16, 12],
  ]) {
    const img = ref.uniform(rand, B * ic * gh * p * gw * p, -2, 2);
    const W = ref.uniform(rand, C * ic * p * p, -0.5, 0.5);
    const b = ref.uniform(rand, C, -1, 1);
    const cls = ref.uniform(rand, C, -1, 1);
    const pos = ref.uniform(rand, (1 + gh * gw) * C, -1, 1);
    const got = ops.patchEmbed(img, B, ic, gh, gw, p, W, b, cls, pos, C);
    const want = ref.patchEmbed(img, B, ic, gh, gw, p, W, b, cls, pos, C);
    close(t, got, want.out, want.scale, `B=${B} inChans=${ic} grid ${gh}x${gw} patch ${p} C=${C}`);
  }
  t.end();
});

test('patchEmbed: argument checks', (t) => {
  const [B, ic, gh, gw, p, C] = [1, 3, 2, 3, 4, 5];
  const a = {
    img: new Float32Array(B * ic * gh * p * gw * p),
    W: new Float32Array(C * ic * p * p),
    b: new Float32Array(C),
    cls: new Float32Array(C),
    pos: new Float32Array((1 + gh * gw) * C),
  };
  const call = (o) => () => {
    const v = { ...a, ...o };
    return ops.patchEmbed(v.img, B, v.ic ?? ic, gh, gw, p, v.W, v.b, v.cls, v.pos, C);
  };
  t.equal(call({})().length, B * (1 + gh * gw) * C, 'valid call');
  t.throws(call({ pos: new Float32Array(gh * gw * C) }), /^RangeError: pos has 30 elements, expected 35/, 'pos without the class entry');
  t.throws(call({ img: new Float32Array(10) }), /^RangeError: img has 10 elements/, 'img wrong length');
  t.throws(call({ W: new Float64Array(C * ic * p * p) }), /^TypeError: W must be an? Float32Array/, 'W wrong type');
  t.throws(call({ ic: 0 }), /^RangeError: inChans must be an integer/, 'inChans = 0');
  t.end();
});

// ---------------------------------------------------------------------------------------------
test('gelu: exact-erf GELU over a wide range, zero and large |x|', (t) => {
  const xs = [];
  for (let i = -1200; i <= 1200; i++) xs.push(i / 100);
  xs.push(0, -0, 1e-3, -1e-3, 1e-30, -1e-30, 20, -20, 100, -100, 1e4, -1e4, 3e38, -3e38, 0.7071067811865476);
  const x = new Float32Array(xs);
  const copy = x.slice();
  const got = ops.gelu(x);
  const want = Array.from(x, (v) => ref.gelu(v));
  close(t, got, want, null, `${x.length} points in [-12, 12] plus extremes`);
  t.deepEqual(x, copy, 'input untouched (a new array is returned)');
  t.equal(got[x.length - 15], 0, 'gelu(0) = 0');
  t.equal(got[x.length - 3], Math.fround(3e38), 'gelu(3e38) = 3e38 (no overflow)');
  t.ok(got[x.length - 2] === 0, 'gelu(-3e38) = 0 (no overflow)');
  t.ok(Number.isNaN(ops.gelu(new Float32Array([NaN]))[0]), 'gelu(NaN) is NaN');
  t.equal(ops.gelu(new Float32Array(0)).length, 0, 'empty input');
  // Lengths that leave every split and vector width with a remainder.
  const rand = ref.mulberry32(81);
  for (const n of [1, 2, 3, 5, 7, 9, 13, 17, 50, 197, 8 * THREADS + 3, 1001]) {
    const v = ref.uniform(rand, n, -6, 6);
    close(t, ops.gelu(v), Array.from(v, (e) => ref.gelu(e)), null, `length ${n}`);
  }
  // A view into a larger buffer reads from its own offset.
  const buf = new Float32Array([9, 9, -1, 0.5, 2, 9]);
  close(t, ops.gelu(buf.subarray(2, 5)), [-1, 0.5, 2].map(ref.gelu), null, 'subarray view');
  t.end();
});

// ---------------------------------------------------------------------------------------------
test('argument validation: wrong types, lengths and non-integer sizes throw, never crash', (t) => {
  const C = 4;
  const x = new Float32Array(3 * C);
  const w = new Float32Array(C).fill(1);
  const b = new Float32Array(C);
  const ln = (...over) => () => {
    const args = [x, 3, C, w, b, 1e-6];
    over.forEach((v, i) => {
      if (v !== undefined) args[i] = v;
    });
    return ops.layerNorm(...args);
  };
  t.throws(ln(new Float64Array(3 * C)), /^TypeError: x must be an? Float32Array/, 'layerNorm: Float64Array x');
  t.throws(ln(Array.from(x)), /^TypeError: x must be an? Float32Array/, 'layerNorm: plain array x');
  t.throws(ln(new Float32Array(3 * C - 1)), /^RangeError: x has 11 elements, expected 12/, 'layerNorm: short x');
  t.throws(ln(undefined, undefined, undefined, new Float32Array(C + 1)), /^RangeError: w has 5 elements, expected 4/, 'layerNorm: long w');
  t.throws(ln(undefined, 2.5), /^RangeError: rows must be an integer/, 'layerNorm: rows = 2.5');
  t.throws(ln(undefined, NaN), /^RangeError: rows must be an integer/, 'layerNorm: rows = NaN');
  t.throws(ln(undefined, Infinity), /^RangeError: rows must be an integer/, 'layerNorm: rows = Infinity');
  t.throws(ln(undefined, 0), /^RangeError: rows must be an integer/, 'layerNorm: rows = 0');
  t.throws(ln(undefined, -3), /^RangeError: rows must be an integer/, 'layerNorm: rows = -3');
  t.throws(ln(undefined, '3'), /^TypeError: rows must be a number/, 'layerNorm: rows as a string');
  t.throws(ln(undefined, undefined, 4.0001), /^RangeError: C must be an integer/, 'layerNorm: C = 4.0001');
  t.throws(() => ops.layerNorm(x, 3), /^TypeError: C must be a number/, 'layerNorm: missing arguments');

  const M = 2;
  const K = 3;
  const N = 5;
  const lx = new Float32Array(M * K);
  const W = new Float32Array(N * K);
  const lb = new Float32Array(N);
  t.throws(() => ops.linear(lx, M, K, new Float64Array(N * K), lb, N, 'bias'), /^TypeError: W must be an? Float32Array/, 'linear: Float64Array W');
  t.throws(() => ops.linear(lx, M, K, W, new Float32Array(N - 1), N, 'bias'), /^RangeError: b has 4 elements, expected 5/, 'linear: short b');
  t.throws(() => ops.linear(lx, M, K, W, lb, N, 'relu'), /^RangeError: epilogue must be 'bias', 'gelu' or 'residual'/, 'linear: unknown epilogue');
  t.throws(() => ops.linear(lx, M, K, W, lb, N, 'residual'), /^TypeError: residual must be an? Float32Array/, 'linear: residual missing');
  t.throws(() => ops.linear(lx, M, K, W, lb, N, 'residual', new Float32Array(M * N + 1)), /^RangeError: residual has 11 elements, expected 10/, 'linear: long residual');
  t.throws(() => ops.linear(lx, M, 1.5, W, lb, N, 'bias'), /^RangeError: K must be an integer/, 'linear: K = 1.5');

  t.throws(() => ops.attention(new Float32Array(10), 1, 2, 1, 4, true), /^RangeError: qkv has 10 elements, expected 24/, 'attention: short qkv');
  t.throws(() => ops.attention(new Float64Array(24), 1, 2, 1, 4, true), /^TypeError: qkv must be an? Float32Array/, 'attention: Float64Array qkv');
  t.throws(() => ops.attention(new Float32Array(12), 1, 1, 1, 4, true), /^RangeError: N must be an integer in \[2,/, 'attention: N = 1');
  t.throws(() => ops.attention(new Float32Array(24), 1, 2, 1, 0, true), /^RangeError: headDim must be an integer/, 'attention: headDim = 0');
  t.throws(() => ops.attention(new Float32Array(24), 1, 2, 0.5, 4, true), /^RangeError: heads must be an integer/, 'attention: heads = 0.5');

  const s = new Float32Array(6);
  t.throws(() => ops.topk(new Int32Array(6), 2, 3, 1), /^TypeError: scores must be an? Float32Array/, 'topk: Int32Array scores');
  t.throws(() => ops.topk(s, 2, 3, 0), /^RangeError: k must be an integer in \[1, 3\]/, 'topk: k = 0');
  t.throws(() => ops.topk(s, 2, 3, 4), /^RangeError: k must be an integer in \[1, 3\]/, 'topk: k = M + 1');
  t.throws(() => ops.topk(s, 2, 3, 1.5), /^RangeError: k must be an integer/, 'topk: k = 1.5');
  t.throws(() => ops.topk(s, 4, 3, 1), /^RangeError: scores has 6 elements, expected 12/, 'topk: B·M mismatch');

  t.throws(() => ops.gelu(new Float64Array(3)), /^TypeError: x must be an? Float32Array/, 'gelu: Float64Array');
  t.throws(() => ops.gelu([1, 2, 3]), /^TypeError: x must be an? Float32Array/, 'gelu: plain array');
  t.throws(() => ops.gelu(), /^TypeError: x must be an? Float32Array/, 'gelu: no argument');

  // After all of that the addon still computes.
  const want = ref.layerNorm(new Float32Array([1, 2, 3, 4]), 1, 4, w, b, 1e-6);
  close(t, ops.layerNorm(new Float32Array([1, 2, 3, 4]), 1, 4, w, b, 1e-6), want.out, want.scale, 'still works after the errors');
  t.end();
});

test('typed-array views with a byte offset are read from their own start', (t) => {
  const rand = ref.mulberry32(71);
  const [rows, C] = [3, 5];
  const big = ref.uniform(rand, 7 + rows * C + 3, -1, 1);
  const view = big.subarray(7, 7 + rows * C);
  const w = ref.uniform(rand, 2 + C, 0.5, 1.5).subarray(2);
  const b = ref.uniform(rand, C, -0.5, 0.5);
  const want = ref.layerNorm(view, rows, C, w, b, 1e-6);
  close(t, ops.layerNorm(view, rows, C, w, b, 1e-6), want.out, want.scale, 'layerNorm on views');
  const s = big.subarray(7, 7 + 2 * 5);
  t.deepEqual(Array.from(ops.topk(s, 2, 5, 5)), ref.topk(s, 2, 5, 5), 'topk on a view');
  t.equal(rowsOf(ops.topk(s, 2, 5, 2), 2).length, 2, 'topk returns B rows of k');
  t.end();
});
