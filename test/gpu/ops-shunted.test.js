'use strict';
// The CUDA kernels of the convolutional families (binding.testing.cudaOps: conv2d as im2col + GEMM
// with its ReLU and fp32 epilogues, depthwise3x3 with its fused add and GELU, groupAttention on
// channel slices, meanTokens, LayerNorm + GELU, the GEMM's ReLU epilogue) against the float64
// references of test/helpers/shuntedReference.js and the CPU ops (binding.testing.ops). As in
// ops.test.js, 16-bit runs feed the references the inputs rounded as the device rounds them, and
// tolerances are relative to each element's Σ|terms|.
const test = require('tape');
const ref = require('../helpers/reference');
const sref = require('../helpers/shuntedReference');
const { loadBinding } = require('../../dist/native');

const { ops, cudaOps } = loadBinding().testing;
const PRECISIONS = ['f32', 'f16', 'bf16'];
const RTOL = { f32: 2e-5, f16: 1.5e-3, bf16: 8e-3 };
const ATOL = 1e-6;
// fp32 outputs of 16-bit operands are not rounded: f32's tolerance plus the accumulation of 16-bit products.
const floatOutRtol = (p) => Math.max(RTOL.f32, RTOL[p] / 8);

function check(t, label, got, want, scale, atol, rtol) {
  const r = ref.compare(got, want, scale, atol, rtol);
  t.ok(r.ok, r.lengthMismatch
    ? `${label}: length ${r.gotLength}, expected ${r.refLength}`
    : `${label}: within ${atol} + ${rtol}·scale (worst at ${r.at}: got ${r.got}, want ${r.want}; max |err| ${r.maxErr.toExponential(2)})`);
}

const rounded = (x, p) => (p === 'f32' ? x : cudaOps.convert(x, p));

// [layout, B, H, W, Cin, Cout, k, stride, pad, epilogue, input]: the model's convolutions in small.
const CONV_SHAPES = [
  ['nchw', 2, 19, 20, 3, 16, 7, 2, 3, 'relu', 'float'], // stem conv 0 on the image
  ['nhwc', 1, 10, 9, 16, 16, 3, 1, 1, 'relu', 'compute'], // stem 3×3 on the previous conv's T output
  ['nhwc', 1, 11, 10, 16, 24, 2, 2, 0, 'float', 'compute'], // stem 2×2/2, odd height: the last row dropped
  ['nhwc', 2, 7, 8, 12, 20, 3, 2, 1, 'float', 'compute'], // OverlapPatchEmbed on the stage norm's output
  ['nhwc', 1, 16, 8, 8, 8, 8, 8, 0, 'float', 'compute'], // sr conv, kernel = stride = 8
  ['nhwc', 2, 6, 5, 40, 33, 1, 1, 0, 'float', 'compute'], // sr 1×1: the GEMM alone
  ['nhwc', 3, 1, 1, 5, 7, 3, 1, 1, 'bias', 'float'], // a 1×1 image: only the centre tap inside
];

test('conv2d: im2col + GEMM against float64 and the CPU op', (t) => {
  const rand = ref.mulberry32(201);
  for (const [layout, B, H, W, Cin, Cout, k, stride, pad, ep, input] of CONV_SHAPES) {
    const x = ref.uniform(rand, B * H * W * Cin, -2, 2);
    const w = ref.uniform(rand, Cout * Cin * k * k, -0.3, 0.3);
    const b = ref.uniform(rand, Cout, -0.5, 0.5);
    const tag = `conv2d ${layout} B${B} ${H}x${W}x${Cin} -> ${Cout} k${k} s${stride} p${pad} ${ep} (${input} input)`;
    for (const p of PRECISIONS) {
      const xr = rounded(x, p);
      const wr = rounded(w, p);
      const want = sref.conv2d(xr, layout, wr, b, B, H, W, Cin, Cout, k, stride, pad, ep === 'relu');
      const got = cudaOps.conv2d(x, layout, w, b, B, H, W, Cin, Cout, k, stride, pad, ep, p, input);
      check(t, `${tag} ${p}`, got, want.out, want.scale, ATOL, ep === 'float' ? floatOutRtol(p) : RTOL[p]);
    }
    const cpu = ops.conv2d(x, layout, w, b, B, H, W, Cin, Cout, k, stride, pad, ep === 'relu' ? 'relu' : 'bias');
    check(t, `${tag} f32 CUDA vs CPU op`, cudaOps.conv2d(x, layout, w, b, B, H, W, Cin, Cout, k, stride, pad, ep, 'f32', input), cpu, null, 1e-5, 1e-5);
  }
  t.throws(() => cudaOps.conv2d(new Float32Array(12), 'nhwc', new Float32Array(108), new Float32Array(4), 1, 2, 2, 3, 4, 3, 1, 0, 'bias', 'f32'),
    /kernel does not fit/, 'a kernel larger than the padded image is a RangeError');
  t.throws(() => cudaOps.conv2d(new Float32Array(12), 'nhwc', new Float32Array(108), new Float32Array(4), 1, 2, 2, 3, 4, 3, 1, 1, 'gelu', 'f32'),
    /epilogue must be 'bias', 'relu' or 'float'/, 'an epilogue conv2d does not have is a RangeError');
  t.end();
});

test('depthwise3x3: out = add + dw(x) (+ GELU) in every form the model uses', (t) => {
  const rand = ref.mulberry32(202);
  // [name, B, H, W, C, x stride, x offset, add: 'x' | 'none' | 'other', gelu, inPlace]
  const cases = [
    ['MLP: gelu(u + dw(u))', 2, 5, 7, 48, 48, 0, 'x', true, false],
    ['local conv, sr > 1: v + lc(v) on the v half of kv', 2, 4, 3, 20, 40, 20, 'x', false, false],
    ['local conv, sr = 1: o += lc(v), v in [k | v], written over o', 1, 7, 7, 24, 48, 24, 'other', false, true],
    ['no add', 1, 6, 4, 13, 13, 0, 'none', false, false],
    ['1×1 grid: the centre tap only', 3, 1, 1, 9, 9, 0, 'x', true, false],
  ];
  for (const [name, B, H, W, C, ldx, xOff, addKind, gelu, inPlace] of cases) {
    const P = B * H * W;
    const x = ref.uniform(rand, xOff + (P - 1) * ldx + C + 5, -2, 2);
    const w = ref.uniform(rand, C * 9, -0.5, 0.5);
    const b = ref.uniform(rand, C);
    const other = addKind === 'other' ? ref.uniform(rand, P * C) : null;
    for (const p of PRECISIONS) {
      const xr = rounded(x, p);
      let add = null;
      let addOff = 0;
      let ldAdd = C;
      if (addKind === 'x') [add, addOff, ldAdd] = [xr, xOff, ldx];
      if (addKind === 'other') add = rounded(other, p);
      const want = sref.depthwise3x3(xr, xOff, ldx, add, addOff, ldAdd, w, b, B, H, W, C, gelu);
      // The device rounds x and add itself: it gets the fp32 arrays.
      const got = cudaOps.depthwise3x3(x, xOff, ldx, addKind === 'x' ? x : other, addOff, ldAdd, w, b, B, H, W, C, gelu, inPlace, p);
      check(t, `${name} (B=${B} ${H}×${W}×${C}) ${p}`, got, want.out, want.scale, ATOL, RTOL[p]);
    }
    const [add, addOff, ldAdd] = addKind === 'x' ? [x, xOff, ldx] : [other, 0, C];
    const cpu = ops.depthwise3x3(x, xOff, ldx, add, addOff, ldAdd, w, b, B, H, W, C, gelu, inPlace);
    const got = cudaOps.depthwise3x3(x, xOff, ldx, add, addOff, ldAdd, w, b, B, H, W, C, gelu, inPlace, 'f32');
    check(t, `${name} f32 CUDA vs CPU op`, got, cpu, null, 1e-5, 1e-5);
  }
  t.throws(() => cudaOps.depthwise3x3(new Float32Array(32), 4, 8, null, 0, 8, new Float32Array(72), new Float32Array(8), 1, 2, 2, 8, false, false, 'f32'),
    /x \(32 floats\) is too short for 4 rows of 8 at offset 4, row stride 8/, 'a view past its array is a RangeError');
  t.throws(() => cudaOps.depthwise3x3(new Float32Array(32), 0, 8, null, 0, 8, new Float32Array(72), new Float32Array(8), 1, 2, 2, 8, false, true, 'f32'),
    /inPlace needs a contiguous add/, 'in place without an add is a RangeError');
  t.end();
});

test('groupAttention: N queries against M keys on channel slices, with the row-0 probabilities', (t) => {
  const rand = ref.mulberry32(203);
  // [B, N, M, g, d]: one head group on the second half of C-wide rows (q and out), k the front half of
  // its kv tensor, v its own buffer; then self-attention (sr = 1) with k and v the halves of [k | v].
  for (const [B, N, M, g, d] of [[2, 64, 16, 2, 16], [1, 49, 4, 1, 32], [2, 30, 6, 3, 4], [1, 20, 1, 1, 16]]) {
    const C = 2 * g * d;
    const half = C / 2;
    const q = ref.uniform(rand, B * N * C, -1.5, 1.5);
    const kv = ref.uniform(rand, B * M * C, -1.5, 1.5);
    const v = ref.uniform(rand, B * M * half, -2, 2);
    const init = ref.uniform(rand, B * N * C, 5, 6);
    const tag = `groupAttention B${B} N${N} M${M} heads ${g} d${d} (second group's slices)`;
    for (const p of PRECISIONS) {
      const want = sref.groupAttention(rounded(q, p), half, C, rounded(kv, p), 0, C, rounded(v, p), 0, half, B, N, M, g, d);
      const got = cudaOps.groupAttention(init, half, C, q, half, C, kv, 0, C, v, 0, half, B, N, M, g, d, p, true);
      const slice = new Float32Array(B * N * half);
      const initT = rounded(init, p);
      let untouched = true;
      for (let r = 0; r < B * N; r++) {
        slice.set(got.out.subarray(r * C + half, (r + 1) * C), r * half);
        for (let c = 0; c < half; c++) untouched = untouched && Object.is(got.out[r * C + c], initT[r * C + c]);
      }
      check(t, `${tag} ${p}`, slice, want.out, want.scale, ATOL, RTOL[p]);
      t.ok(untouched, `${tag} ${p}: the first group's channels untouched`);
      const rowSums = Array.from({ length: B * g }, (_, i) => got.probs.subarray(i * M, (i + 1) * M).reduce((a, x) => a + x, 0));
      t.ok(got.probs.length === B * g * M && rowSums.every((s) => Math.abs(s - 1) < 1e-5), `${tag} ${p}: every head's row-0 probabilities sum to 1`);
      const plain = cudaOps.groupAttention(init, half, C, q, half, C, kv, 0, C, v, 0, half, B, N, M, g, d, p, false);
      t.ok(plain.probs === undefined && plain.out.every((x, i) => Object.is(x, got.out[i])), `${tag} ${p}: the same output without probabilities`);
    }
    const cpu = ops.groupAttention(init, half, C, q, half, C, kv, 0, C, v, 0, half, B, N, M, g, d);
    check(t, `${tag} f32 CUDA vs CPU op`, cudaOps.groupAttention(init, half, C, q, half, C, kv, 0, C, v, 0, half, B, N, M, g, d, 'f32').out, cpu, null, 1e-5, 1e-5);
  }
  for (const [B, N, H, d] of [[2, 16, 2, 16], [1, 9, 3, 8]]) {
    const C = H * d;
    const q = ref.uniform(rand, B * N * C, -1.5, 1.5);
    const kv = ref.uniform(rand, B * N * 2 * C, -1.5, 1.5);
    const tag = `groupAttention self-attention B${B} N${N} heads ${H} d${d} (k | v halves)`;
    for (const p of PRECISIONS) {
      const kvr = rounded(kv, p);
      const want = sref.groupAttention(rounded(q, p), 0, C, kvr, 0, 2 * C, kvr, C, 2 * C, B, N, N, H, d);
      const got = cudaOps.groupAttention(new Float32Array(B * N * C), 0, C, q, 0, C, kv, 0, 2 * C, kv, C, 2 * C, B, N, N, H, d, p);
      check(t, `${tag} ${p}`, got.out, want.out, want.scale, ATOL, RTOL[p]);
    }
  }
  t.end();
});

test('meanTokens, LayerNorm + GELU and the GEMM ReLU epilogue', (t) => {
  const rand = ref.mulberry32(204);
  for (const [B, N, C] of [[3, 49, 40], [2, 4, 130], [1, 1, 7]]) {
    const x = ref.uniform(rand, B * N * C, -3, 3);
    const want = sref.meanTokens(x, B, N, C);
    for (const p of PRECISIONS) check(t, `meanTokens B${B} N${N} C${C} ${p}`, cudaOps.meanTokens(x, B, N, C, p), want.out, want.scale, ATOL, RTOL[p]);
    check(t, `meanTokens B${B} N${N} C${C} f32 CUDA vs CPU op`, cudaOps.meanTokens(x, B, N, C, 'f32'), ops.meanTokens(x, B, N, C), null, 1e-6, 1e-5);
  }
  for (const [rows, C] of [[7, 130], [5, 24]]) {
    const x = ref.uniform(rand, rows * C, -3, 5);
    const w = ref.uniform(rand, C, 0.5, 1.5);
    const b = ref.uniform(rand, C, -0.2, 0.2);
    const norm = ref.layerNorm(x, rows, C, w, b, 1e-5);
    const want = { out: norm.out.map(ref.gelu), scale: norm.scale.map((s) => ref.GELU_MAX_SLOPE * s) };
    for (const p of PRECISIONS) check(t, `layerNorm + GELU ${rows}x${C} ${p}`, cudaOps.layerNorm(x, rows, C, w, b, 1e-5, p, true), want.out, want.scale, ATOL, RTOL[p]);
  }
  for (const [M, K, N] of [[37, 72, 20], [5, 17, 3]]) {
    for (const p of PRECISIONS) {
      const x = rounded(ref.uniform(rand, M * K), p);
      const W = rounded(ref.uniform(rand, N * K, -0.3, 0.3), p);
      const b = ref.uniform(rand, N, -0.5, 0.5);
      const lin = ref.linear(x, M, K, W, b, N, 'bias');
      const got = cudaOps.linear(x, M, K, W, b, N, 'relu', p);
      check(t, `linear ${M}x${K}x${N} relu ${p}`, got, lin.out.map((v) => Math.max(v, 0)), lin.scale, ATOL, RTOL[p]);
      const negatives = lin.out.filter((v) => v < -1e-2).length;
      t.ok(negatives > 0 && lin.out.every((v, i) => !(v < -1e-2) || got[i] === 0), `linear ${M}x${K}x${N} relu ${p}: ${negatives} clearly negative pre-activations are exactly 0`);
    }
  }
  t.end();
});
