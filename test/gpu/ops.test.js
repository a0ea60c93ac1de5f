'use strict';
// Each CUDA kernel (binding.testing.cudaOps) against the float64 references of test/helpers and the
// CPU ops (binding.testing.ops). 16-bit runs feed the references the same rounded inputs (rounded on
// the device by the convert kernel, itself checked against round-to-nearest-even here), so
// what remains is accumulation order and the rounding of 16-bit outputs.
const test = require('tape');
const ref = require('../helpers/reference');
const { loadBinding } = require('../../dist/native');

const { ops, cudaOps } = loadBinding().testing;
const PRECISIONS = ['f32', 'f16', 'bf16'];
// Relative to each element's scale (the sum of |terms|): fp32 accumulation, plus the output's
// rounding when it is stored in 16 bits (half an ulp: 2^-11 for f16, 2^-8 for bf16, doubled).
const RTOL = { f32: 2e-5, f16: 1.5e-3, bf16: 8e-3 };
const ATOL = 1e-6;

function check(t, label, got, want, scale, atol, rtol) {
  const r = ref.compare(got, want, scale, atol, rtol);
  t.ok(r.ok, r.lengthMismatch
    ? `${label}: length ${r.gotLength}, expected ${r.refLength}`
    : `${label}: within ${atol} + ${rtol}·scale (worst at ${r.at}: got ${r.got}, want ${r.want}, tol ${r.tol?.toExponential(2)}; max |err| ${r.maxErr.toExponential(2)})`);
}

const rounded = (x, p) => (p === 'f32' ? x : cudaOps.convert(x, p));

/** Round-to-nearest-even of fp32 to bf16 / f16, on the host, for the convert check. */
function bf16Host(x) {
  const f = new Float32Array([x]);
  const u = new Uint32Array(f.buffer);
  if (Number.isNaN(x)) return NaN;
  u[0] = (u[0] + 0x7fff + ((u[0] >>> 16) & 1)) & 0xffff0000;
  return f[0];
}
function f16Host(x) {
  if (!Number.isFinite(x)) return x;
  const a = Math.abs(x);
  if (a >= 65520) return Math.sign(x) * Infinity;
  // Spacing of f16 values near a: 2^(e-10) for normals, 2^-24 below 2^-14.
  const e = Math.max(Math.floor(Math.log2(a || 1)), -14);
  const ulp = 2 ** (e - 10);
  const q = a / ulp;
  let r = Math.round(q);
  if (Math.abs(q - Math.trunc(q) - 0.5) < 1e-12) r = Math.trunc(q) % 2 === 0 ? Math.trunc(q) : Math.trunc(q) + 1;
  return Math.sign(x) * r * ulp;
}

test('convert rounds to nearest even, like the host', (t) => {
  const rand = ref.mulberry32(1);
  const x = Float32Array.from({ length: 4096 }, (_, i) => (rand() - 0.5) * 2 ** ((i % 40) - 20));
  x.set([0, -0, 1, 1 + 2 ** -8, 1 + 3 * 2 ** -9, 65504, 1e-7, -3.14159], 0);
  for (const [p, host] of [['bf16', bf16Host], ['f16', f16Host]]) {
    const got = cudaOps.convert(x, p);
    const bad = [];
    for (let i = 0; i < x.length; i++) if (!Object.is(got[i], Math.fround(host(x[i])))) bad.push(`${x[i]} -> ${got[i]} (want ${host(x[i])})`);
    t.deepEqual(bad.slice(0, 5), [], `${p}: all ${x.length} values rounded as the host does`);
  }
  t.end();
});

test('layerNorm', (t) => {
  const rand = ref.mulberry32(2);
  for (const [rows, C] of [[1, 48], [7, 384], [33, 768], [5, 130]]) {
    const x = ref.uniform(rand, rows * C, -3, 5);
    const w = ref.uniform(rand, C, 0.5, 1.5);
    const b = ref.uniform(rand, C, -0.2, 0.2);
    const want = ref.layerNorm(x, rows, C, w, b, 1e-6);
    const cpu = ops.layerNorm(x, rows, C, w, b, 1e-6);
    for (const p of PRECISIONS) {
      const got = cudaOps.layerNorm(x, rows, C, w, b, 1e-6, p);
      check(t, `layerNorm ${rows}x${C} ${p} vs float64`, got, want.out, want.scale, ATOL, RTOL[p]);
    }
    check(t, `layerNorm ${rows}x${C} f32 CUDA vs CPU op`, cudaOps.layerNorm(x, rows, C, w, b, 1e-6, 'f32'), cpu, null, 1e-5, 1e-5);
  }
  t.end();
});

test('linear, every epilogue and both paths', (t) => {
  const rand = ref.mulberry32(3);
  for (const [M, K, N] of [[1, 48, 144], [197, 384, 1152], [37, 1536, 384], [130, 72, 10], [5, 768, 3]]) {
    for (const p of PRECISIONS) {
      const x = rounded(ref.uniform(rand, M * K), p);
      const W = rounded(ref.uniform(rand, N * K, -0.1, 0.1), p);
      const b = ref.uniform(rand, N, -0.5, 0.5);
      const res = ref.uniform(rand, M * N);
      for (const ep of ['bias', 'gelu', 'residual', 'float']) {
        const want = ref.linear(x, M, K, W, b, N, ep === 'float' ? 'bias' : ep, res);
        // fp32 outputs (residual, float) are not rounded: f32 tolerance plus accumulation of 16-bit products.
        const rtol = ep === 'residual' || ep === 'float' ? Math.max(RTOL.f32, RTOL[p] / 8) : RTOL[p];
        for (const path of ['auto', 'simt', 'mma']) {
          if (path === 'mma' && p === 'f32') continue;
          let got;
          try {
            got = cudaOps.linear(x, M, K, W, b, N, ep, p, ep === 'residual' ? res : undefined, path);
          } catch (e) {
            t.fail(`linear ${M}x${K}x${N} ${ep} ${p} ${path}: threw ${e.message}`);
            continue;
          }
          check(t, `linear ${M}x${K}x${N} ${ep} ${p} ${path}`, got, want.out, want.scale, ATOL, rtol);
        }
      }
    }
  }
  t.end();
});

test('linear, every tensor-core tiling, split-K in 2 to 4 splits', (t) => {
  const rand = ref.mulberry32(11);
  // K = 200: 7 k-slices of 32, split 4 + 3, 3 + 3 + 1, 2 + 2 + 2 + 1; M and N past whole tiles.
  for (const [M, K, N] of [[130, 200, 70], [33, 776, 136]]) {
    for (const p of ['f16', 'bf16']) {
      const x = rounded(ref.uniform(rand, M * K), p);
      const W = rounded(ref.uniform(rand, N * K, -0.1, 0.1), p);
      const b = ref.uniform(rand, N, -0.5, 0.5);
      const res = ref.uniform(rand, M * N);
      for (const ep of ['bias', 'residual']) {
        const want = ref.linear(x, M, K, W, b, N, ep, res);
        const rtol = ep === 'residual' ? Math.max(RTOL.f32, RTOL[p] / 8) : RTOL[p];
        for (const tiling of ['128x128', '128x64', '64x64']) {
          for (let splits = 1; splits <= 4; splits++) {
            const label = `linear ${M}x${K}x${N} ${ep} ${p} ${tiling} in ${splits} split(s)`;
            let got;
            try {
              got = cudaOps.linear(x, M, K, W, b, N, ep, p, ep === 'residual' ? res : undefined, 'mma', { tiling, splits });
            } catch (e) {
              t.fail(`${label}: threw ${e.message}`);
              continue;
            }
            check(t, label, got, want.out, want.scale, ATOL, rtol);
          }
        }
      }
    }
  }
  t.end();
});

test('attention with and without the class-token probabilities', (t) => {
  const rand = ref.mulberry32(4);
  for (const [B, N, H, d] of [[1, 197, 6, 64], [3, 140, 3, 16], [2, 72, 12, 64], [5, 2, 1, 32], [1, 257, 4, 128]]) {
    for (const p of PRECISIONS) {
      const qkv = rounded(ref.uniform(rand, B * N * 3 * H * d, -2, 2), p);
      const want = ref.attention(qkv, B, N, H, d);
      const got = cudaOps.attention(qkv, B, N, H, d, true, p);
      check(t, `attention ${B}x${N} h${H} d${d} ${p} out`, got.out, want.out, want.scale, ATOL, RTOL[p]);
      const probs = new Float64Array(B * H * N);
      for (let b = 0; b < B; b++) for (let h = 0; h < H; h++) for (let j = 0; j < N; j++) probs[(b * H + h) * N + j] = want.probs[b][h][0][j];
      check(t, `attention ${B}x${N} h${H} d${d} ${p} class-token probabilities`, got.probs, probs, null, 1e-7, 1e-4);
      const plain = cudaOps.attention(qkv, B, N, H, d, false, p);
      t.ok(plain.probs === undefined && plain.out.every((v, i) => Object.is(v, got.out[i])), `attention ${B}x${N} ${p}: same output without probabilities`);
    }
  }
  t.end();
});

test('topkGatherFuse against topk + gatherFuse of the CPU, ties included', (t) => {
  const rand = ref.mulberry32(5);
  for (const [B, N, H, C, k, fuse, ties] of [[2, 197, 6, 384, 137, true, false], [3, 139, 3, 48, 97, false, false],
    [1, 5, 2, 8, 1, true, false], [4, 100, 3, 48, 50, true, true], [2, 72, 1, 16, 70, false, true]]) {
    const x = ref.uniform(rand, B * N * C);
    // Probabilities from a coarse grid when testing ties, so many scores are exactly equal.
    const probs = Float32Array.from({ length: B * H * N }, () => (ties ? Math.floor(rand() * 4) / 8 : rand()));
    // The kernel's scores: fp32 sum over heads in head order, then the mean.
    const scores = new Float32Array(B * (N - 1));
    for (let b = 0; b < B; b++)
      for (let j = 0; j < N - 1; j++) {
        let s = 0;
        for (let h = 0; h < H; h++) s = Math.fround(s + probs[(b * H + h) * N + 1 + j]);
        scores[b * (N - 1) + j] = Math.fround(s / H);
      }
    const idx = ops.topk(scores, B, N - 1, k);
    const cpu = ops.gatherFuse(x, B, N, C, scores, idx, k, fuse);
    const fusedOrigin = -4;
    const got = cudaOps.topkGatherFuse(x, probs, B, N, H, C, k, fuse, undefined, fusedOrigin);
    const label = `topkGatherFuse B${B} N${N} h${H} C${C} k${k}${fuse ? ' fused' : ''}${ties ? ' with ties' : ''}`;
    const wantOrigins = Array.from(cpu.origins).map((o) => (o === -1 ? fusedOrigin : o));
    t.deepEqual(Array.from(got.origins), wantOrigins, `${label}: kept tokens and order identical`);
    const per = 1 + k + (fuse ? 1 : 0);
    const rowsEqual = [];
    for (let b = 0; b < B; b++)
      for (let r = 0; r < 1 + k; r++)
        for (let c = 0; c < C; c++) if (!Object.is(got.out[(b * per + r) * C + c], cpu.out[(b * per + r) * C + c])) rowsEqual.push(`${b}/${r}`);
    t.deepEqual(rowsEqual.slice(0, 3), [], `${label}: class and kept tokens copied bit-exactly`);
    if (fuse) {
      const want = ref.gatherFuse(x, B, N, C, scores, Int32Array.from(idx), k, fuse);
      check(t, `${label}: fused token`, got.out, want.out, want.scale, 1e-6, 1e-5);
    }
  }
  t.end();
});

test('patch embedding = patchify + linear (float) + assembleTokens, as the CPU op', (t) => {
  const rand = ref.mulberry32(6);
  for (const [B, ic, gh, gw, p, C] of [[2, 3, 14, 14, 16, 48], [1, 1, 3, 5, 4, 8], [3, 3, 16, 16, 16, 384]]) {
    const img = ref.uniform(rand, B * ic * gh * p * gw * p, -2, 2);
    const K = ic * p * p;
    const W = ref.uniform(rand, C * K, -0.05, 0.05);
    const b = ref.uniform(rand, C);
    const cls = ref.uniform(rand, C);
    const pos = ref.uniform(rand, (1 + gh * gw) * C);
    for (const prec of PRECISIONS) {
      // Image and weights as the compute type holds them; the tokens themselves stay fp32.
      const imgT = rounded(img, prec);
      const WT = rounded(W, prec);
      const want = ref.patchEmbed(imgT, B, ic, gh, gw, p, WT, b, cls, pos, C);
      const cols = cudaOps.patchify(imgT, B, ic, gh, gw, p, prec);
      const patches = cudaOps.linear(cols, B * gh * gw, K, WT, b, C, 'float', prec);
      const got = cudaOps.assembleTokens(patches, cls, pos, B, gh * gw, C);
      check(t, `patch embedding B${B} ${ic}x${gh * p}x${gw * p} p${p} C${C} ${prec}`, got, want.out, want.scale, 1e-5, RTOL.f32);
    }
    const cpu = ops.patchEmbed(img, B, ic, gh, gw, p, W, b, cls, pos, C);
    check(t, `patch embedding B${B} f32 CUDA vs CPU op`, cudaOps.assembleTokens(
      cudaOps.linear(cudaOps.patchify(img, B, ic, gh, gw, p, 'f32'), B * gh * gw, K, W, b, C, 'float', 'f32'), cls, pos, B, gh * gw, C), cpu, null, 1e-4, 1e-4);
  }
  t.end();
});
