'use strict';
// The CPU ops of the convolutional families (conv2d with its ReLU epilogue, depthwise3x3,
// groupAttention, meanTokens) against plain float64 references (test/helpers/shuntedReference.js), on
// the shapes the Shunted Transformer uses and on awkward ones, with seeded random inputs.
// Tolerance as in ops.test.js: |got − ref| <= 1e-5 + 1e-5·S, S the float64 sum of |terms|.
const test = require('tape');
const { loadBinding } = require('../dist/native');
const ref = require('./helpers/reference');
const sref = require('./helpers/shuntedReference');

const ops = loadBinding().testing.ops;
const ATOL = 1e-5;
const RTOL = 1e-5;

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

// ---------------------------------------------------------------------------------------------
// [layout, B, H, W, Cin, Cout, k, stride, pad]: the model's convolutions, then odd sizes, a grid
// the strided kernel does not divide (floor), one band split over output columns, many bands.
const CONV_SHAPES = [
  ['nchw', 2, 19, 20, 3, 16, 7, 2, 3], // stem conv 0
  ['nhwc', 2, 10, 9, 16, 16, 3, 1, 1], // stem 3×3
  ['nhwc', 1, 11, 10, 16, 24, 2, 2, 0], // stem 2×2/2, odd height: the last row is dropped
  ['nhwc', 2, 7, 8, 12, 20, 3, 2, 1], // OverlapPatchEmbed
  ['nhwc', 1, 16, 8, 8, 8, 8, 8, 0], // sr conv, kernel = stride = 8
  ['nhwc', 2, 12, 8, 20, 20, 4, 4, 0], // sr 4
  ['nhwc', 2, 6, 5, 40, 33, 1, 1, 0], // sr 1×1 (r = 2's second group): the linear() path
  ['nhwc', 1, 5, 5, 24, 64, 3, 1, 1], // one band: its output columns are split over the threads
  ['nhwc', 1, 40, 40, 16, 40, 3, 1, 1], // 1600 pixels: several bands
  ['nchw', 1, 5, 6, 2, 3, 3, 1, 1], // tiny
  ['nhwc', 3, 1, 1, 5, 7, 3, 1, 1], // a 1×1 image: only the centre tap is inside
];

test('conv2d: im2col + GEMM matches the float64 convolution (NCHW and NHWC input, stride, padding)', (t) => {
  const rand = ref.mulberry32(101);
  for (const [layout, B, H, W, Cin, Cout, k, stride, pad] of CONV_SHAPES) {
    const x = ref.uniform(rand, B * H * W * Cin, -2, 2);
    const w = ref.uniform(rand, Cout * Cin * k * k, -0.5, 0.5);
    const b = ref.uniform(rand, Cout);
    const copy = x.slice();
    const want = sref.conv2d(x, layout, w, b, B, H, W, Cin, Cout, k, stride, pad);
    const got = ops.conv2d(x, layout, w, b, B, H, W, Cin, Cout, k, stride, pad, 'bias');
    const tag = `${layout} B=${B} ${H}×${W}×${Cin} → ${want.Ho}×${want.Wo}×${Cout}, k=${k} s=${stride} p=${pad}`;
    close(t, got, want.out, want.scale, tag);
    t.deepEqual(x, copy, `${tag}: input untouched`);
  }
  t.end();
});

test('conv2d: the ReLU epilogue is max(conv + b, 0), exactly 0 below', (t) => {
  const rand = ref.mulberry32(102);
  const [B, H, W, Cin, Cout, k] = [2, 9, 7, 3, 16, 7];
  const x = ref.uniform(rand, B * H * W * Cin, -2, 2);
  const w = ref.uniform(rand, Cout * Cin * k * k, -0.5, 0.5);
  const b = ref.uniform(rand, Cout);
  const want = sref.conv2d(x, 'nchw', w, b, B, H, W, Cin, Cout, k, 2, 3, true);
  const linearPart = sref.conv2d(x, 'nchw', w, b, B, H, W, Cin, Cout, k, 2, 3, false);
  const got = ops.conv2d(x, 'nchw', w, b, B, H, W, Cin, Cout, k, 2, 3, 'relu');
  close(t, got, want.out, want.scale, 'relu(conv)');
  const negatives = linearPart.out.reduce((n, v, i) => n + (v < -1e-4 ? 1 : 0) * (got[i] === 0 ? 1 : 0), 0);
  const below = linearPart.out.filter((v) => v < -1e-4).length;
  t.ok(below > 10 && negatives === below, `${below} negative pre-activations all give exactly 0`);
  t.end();
});

test('conv2d: the ReLU epilogue of a 1×1 conv, which is linear() itself', (t) => {
  const rand = ref.mulberry32(103);
  const [B, H, W, Cin, Cout] = [2, 5, 4, 29, 45];
  const x = ref.uniform(rand, B * H * W * Cin);
  const w = ref.uniform(rand, Cout * Cin);
  const b = ref.uniform(rand, Cout);
  const want = sref.conv2d(x, 'nhwc', w, b, B, H, W, Cin, Cout, 1, 1, 0, true);
  const got = ops.conv2d(x, 'nhwc', w, b, B, H, W, Cin, Cout, 1, 1, 0, 'relu');
  close(t, got, want.out, want.scale, 'max(x·Wᵀ + b, 0)');
  t.ok(got.filter((v) => v === 0).length > 100, 'negatives are exactly 0');
  t.end();
});

test('conv2d: bad arguments are clear errors', (t) => {
  const x = new Float32Array(2 * 2 * 3);
  const w = new Float32Array(4 * 3 * 9);
  const b = new Float32Array(4);
  t.throws(() => ops.conv2d(x, 'chw', w, b, 1, 2, 2, 3, 4, 3, 1, 1, 'bias'), /layout must be 'nchw' or 'nhwc'/);
  t.throws(() => ops.conv2d(x, 'nhwc', w, b, 1, 2, 2, 3, 4, 3, 1, 0, 'bias'), /kernel does not fit/);
  t.throws(() => ops.conv2d(x, 'nhwc', w, b, 1, 2, 2, 3, 4, 3, 1, 1, 'gelu'), /epilogue must be 'bias' or 'relu'/);
  t.throws(() => ops.conv2d(x, 'nhwc', w.subarray(1), b, 1, 2, 2, 3, 4, 3, 1, 1, 'bias'), /W has 107 elements, expected 108/);
  t.end();
});

// ---------------------------------------------------------------------------------------------
test('depthwise3x3: out = add + dw(x) (+ GELU) in every form the model uses', (t) => {
  const rand = ref.mulberry32(111);
  const cases = [
    // [name, B, H, W, C, x stride, x offset, add: 'x' | 'none' | 'other', gelu, inPlace]
    ['MLP: gelu(u + dw(u))', 2, 5, 7, 48, 48, 0, 'x', true, false],
    ['local conv, sr > 1: v + lc(v) on the v half of kv', 2, 4, 3, 20, 40, 20, 'x', false, false],
    ['local conv, sr = 1: o += lc(v), v in [k | v], written over o', 1, 7, 7, 24, 48, 24, 'other', false, true],
    ['no add', 1, 6, 4, 13, 13, 0, 'none', false, false],
    ['1×1 grid: the centre tap only', 3, 1, 1, 9, 9, 0, 'x', true, false],
    ['a single row', 2, 1, 5, 17, 17, 0, 'other', false, false],
    ['wide channels (F = 2048 in the released stage 4)', 1, 3, 3, 2048, 2048, 0, 'x', true, false],
  ];
  for (const [name, B, H, W, C, ldx, xOff, addKind, gelu, inPlace] of cases) {
    const P = B * H * W;
    const x = ref.uniform(rand, xOff + (P - 1) * ldx + C + 5, -2, 2);
    const w = ref.uniform(rand, C * 9, -0.5, 0.5);
    const b = ref.uniform(rand, C);
    let add = null;
    let addOff = 0;
    let ldAdd = C;
    if (addKind === 'x') [add, addOff, ldAdd] = [x, xOff, ldx];
    if (addKind === 'other') add = ref.uniform(rand, P * C);
    const copy = x.slice();
    const want = sref.depthwise3x3(x, xOff, ldx, add, addOff, ldAdd, w, b, B, H, W, C, gelu);
    const got = ops.depthwise3x3(x, xOff, ldx, add, addOff, ldAdd, w, b, B, H, W, C, gelu, inPlace);
    close(t, got, want.out, want.scale, `${name} (B=${B} ${H}×${W}×${C})`);
    t.deepEqual(x, copy, `${name}: x untouched`);
  }
  t.end();
});

test('depthwise3x3: a centre-only kernel with zero bias is the identity on x (+ add)', (t) => {
  const rand = ref.mulberry32(112);
  const [B, H, W, C] = [2, 4, 5, 19];
  const x = ref.uniform(rand, B * H * W * C);
  const w = new Float32Array(C * 9);
  for (let c = 0; c < C; c++) w[c * 9 + 4] = 1;
  const got = ops.depthwise3x3(x, 0, C, x, 0, C, w, new Float32Array(C), B, H, W, C, false, false);
  t.deepEqual(Array.from(got), Array.from(x).map((v) => Math.fround(2 * v)), 'x + x exactly');
  t.end();
});

test('depthwise3x3: views that do not fit their array are clear errors', (t) => {
  const x = new Float32Array(4 * 8);
  const w = new Float32Array(8 * 9);
  const b = new Float32Array(8);
  t.throws(() => ops.depthwise3x3(x, 4, 8, null, 0, 8, w, b, 1, 2, 2, 8, false, false), /x \(32 floats\) is too short for 4 rows of 8 at offset 4, row stride 8/);
  t.throws(() => ops.depthwise3x3(x, 0, 4, null, 0, 8, w, b, 1, 2, 2, 8, false, false), /x row stride must be an integer in \[8,/);
  t.throws(() => ops.depthwise3x3(x, 0, 8, null, 0, 8, w, b, 1, 2, 2, 8, false, true), /inPlace needs a contiguous add/);
  t.throws(() => ops.depthwise3x3(x, 0, 8, new Float32Array(64), 0, 16, w, b, 1, 2, 2, 8, false, true), /inPlace needs a contiguous add/);
  t.end();
});

// ---------------------------------------------------------------------------------------------
// [B, N, M, heads, d]: the released models' group shapes scaled down, M < N, M > N, one key,
// head dims on the SIMD tiles (multiples of 16) and on the BLAS path (the others).
const GROUP_SHAPES = [
  [1, 196, 49, 1, 32], // stage 1 / 3 style: one head per group, coarse keys
  [2, 49, 4, 2, 32], // 64 px input: 2×2 key grid
  [1, 600, 49, 1, 32], // many queries, one (image, head) pair: rows split into chunks
  [2, 64, 16, 3, 16],
  [1, 37, 37, 4, 48], // self-attention (sr = 1)
  [2, 5, 7, 2, 16], // more keys than queries
  [1, 30, 1, 2, 32], // one key: out = v
  [2, 49, 12, 3, 4], // head dim 4 (BLAS)
  [1, 300, 20, 2, 8], // BLAS path, queries in blocks of 256
  [1, 23, 9, 1, 20],
];

test('groupAttention: out = softmax(q·kᵀ/√d)·v with N queries against M keys', (t) => {
  const rand = ref.mulberry32(121);
  for (const [B, N, M, H, d] of GROUP_SHAPES) {
    const C = H * d;
    const q = ref.uniform(rand, B * N * C, -1.5, 1.5);
    const k = ref.uniform(rand, B * M * C, -1.5, 1.5);
    const v = ref.uniform(rand, B * M * C, -2, 2);
    const want = sref.groupAttention(q, 0, C, k, 0, C, v, 0, C, B, N, M, H, d);
    const got = ops.groupAttention(new Float32Array(B * N * C), 0, C, q, 0, C, k, 0, C, v, 0, C, B, N, M, H, d);
    close(t, got, want.out, want.scale, `B=${B} N=${N} M=${M} heads=${H} headDim=${d}`);
  }
  t.end();
});

test('groupAttention: one head group on channel slices, as shunted attention reads them', (t) => {
  const rand = ref.mulberry32(122);
  for (const [B, N, M, g, d] of [[2, 64, 16, 2, 16], [1, 49, 4, 1, 32], [2, 30, 6, 3, 4]]) {
    const C = 2 * g * d;
    const half = C / 2;
    const q = ref.uniform(rand, B * N * C, -1.5, 1.5); // q [B, N, C]: group 2 reads channels [C/2, C)
    const kv = ref.uniform(rand, B * M * C, -1.5, 1.5); // kv [B, M, C]: k = [0, C/2)
    const v = ref.uniform(rand, B * M * half, -2, 2); // v + lc(v), its own [B, M, C/2] buffer
    const init = ref.uniform(rand, B * N * C, 5, 6); // group 1's output, already written
    const got = ops.groupAttention(init, half, C, q, half, C, kv, 0, C, v, 0, half, B, N, M, g, d);
    const want = sref.groupAttention(q, half, C, kv, 0, C, v, 0, half, B, N, M, g, d);
    const slice = new Float32Array(B * N * half);
    let untouched = true;
    for (let r = 0; r < B * N; r++) {
      slice.set(got.subarray(r * C + half, (r + 1) * C), r * half);
      for (let c = 0; c < half; c++) untouched = untouched && got[r * C + c] === init[r * C + c];
    }
    const tag = `B=${B} N=${N} M=${M} heads=${g} headDim=${d}`;
    close(t, slice, want.out, want.scale, `${tag}: channels [C/2, C) of out`);
    t.ok(untouched, `${tag}: channels [0, C/2) of out untouched`);
  }
  // sr = 1: k and v are the two halves of one [B, N, 2C] buffer.
  const [B, N, H, d] = [2, 25, 2, 16];
  const C = H * d;
  const q = ref.uniform(rand, B * N * C);
  const kv = ref.uniform(rand, B * N * 2 * C);
  const got = ops.groupAttention(new Float32Array(B * N * C), 0, C, q, 0, C, kv, 0, 2 * C, kv, C, 2 * C, B, N, N, H, d);
  const want = sref.groupAttention(q, 0, C, kv, 0, 2 * C, kv, C, 2 * C, B, N, N, H, d);
  close(t, got, want.out, want.scale, 'k and v halves of one kv buffer (row stride 2C)');
  t.end();
});

test('groupAttention: a single key gives out = v; q = 0 gives the mean of v', (t) => {
  const rand = ref.mulberry32(123);
  for (const d of [32, 8]) {
    const [B, N, H] = [2, 13, 2];
    const C = H * d;
    const q = ref.uniform(rand, B * N * C, -3, 3);
    const v = ref.uniform(rand, B * C);
    const got = ops.groupAttention(new Float32Array(B * N * C), 0, C, q, 0, C, ref.uniform(rand, B * C), 0, C, v, 0, C, B, N, 1, H, d);
    const want = new Float64Array(B * N * C);
    for (let b = 0; b < B; b++) for (let i = 0; i < N; i++) for (let c = 0; c < C; c++) want[(b * N + i) * C + c] = v[b * C + c];
    close(t, got, want, null, `headDim ${d}: M = 1`, 1e-6, 1e-6);
    const M = 9;
    const v9 = ref.uniform(rand, B * M * C);
    const zero = ops.groupAttention(new Float32Array(B * N * C), 0, C, new Float32Array(B * N * C), 0, C, ref.uniform(rand, B * M * C), 0, C, v9, 0, C, B, N, M, H, d);
    const mean = new Float64Array(B * N * C);
    for (let b = 0; b < B; b++) {
      for (let c = 0; c < C; c++) {
        let s = 0;
        for (let j = 0; j < M; j++) s += v9[(b * M + j) * C + c];
        for (let i = 0; i < N; i++) mean[(b * N + i) * C + c] = s / M;
      }
    }
    close(t, zero, mean, null, `headDim ${d}: q = 0 averages v over the M keys`);
  }
  t.end();
});

// ---------------------------------------------------------------------------------------------
test('meanTokens: the mean over each image\'s tokens', (t) => {
  const rand = ref.mulberry32(131);
  for (const [B, N, C] of [[1, 49, 512], [3, 4, 16], [2, 1, 7], [5, 64, 33]]) {
    const x = ref.uniform(rand, B * N * C, -3, 3);
    const want = sref.meanTokens(x, B, N, C);
    close(t, ops.meanTokens(x, B, N, C), want.out, want.scale, `B=${B} N=${N} C=${C}`, 1e-6, 1e-6);
  }
  t.end();
});
