// AVX-512 attention tiles: 16 floats per vector. See cls_attention.cc for the scheme.
#include <immintrin.h>

#include <algorithm>

#include "attention_tiles.h"
#include "vec_math.h"

// GCC 12's AVX-512 headers build masked intrinsics from an undefined __Y and warn about it.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

namespace evit::cpu {

namespace {

// ------------------------------------------------------------------------------------------
// AVX-512: 16 floats per vector.

// s[r][j0 .. j0+16W) = scale · Σ_c q[r][c]·kt[c][j0 ..], r < R. Each kt vector loaded is
// used by R FMAs and each broadcast q[r][c] by W, so loads stay well under the FMA count.
template <int R, int W>
__attribute__((target("avx512f"))) inline void scoreTile512(const float* q, size_t ld, const Scratch& sc, int d,
                                                            float scale, int j0) {
  __m512 acc[R][W];
  for (int r = 0; r < R; ++r)
    for (int w = 0; w < W; ++w) acc[r][w] = _mm512_setzero_ps();
  for (int c = 0; c < d; ++c) {
    const float* ktRow = sc.kt + (size_t)c * sc.npad + j0;
    __m512 kv[W];
    for (int w = 0; w < W; ++w) kv[w] = _mm512_load_ps(ktRow + 16 * w);
    for (int r = 0; r < R; ++r) {
      const __m512 qb = _mm512_set1_ps(q[(size_t)r * ld + c]);
      for (int w = 0; w < W; ++w) acc[r][w] = _mm512_fmadd_ps(qb, kv[w], acc[r][w]);
    }
  }
  const __m512 vs = _mm512_set1_ps(scale);
  for (int r = 0; r < R; ++r)
    for (int w = 0; w < W; ++w) _mm512_store_ps(sc.s + (size_t)r * sc.npad + j0 + 16 * w, _mm512_mul_ps(acc[r][w], vs));
}

// Softmax of rows 0..R-1 of s in place over columns 0..N-1: exp(s − max) / Σ, as softmaxRow
// computes it; masked loads keep the padding columns out of the max and the sum.
template <int R>
__attribute__((target("avx512f"))) inline void softmaxRows512(const Scratch& sc, int N) {
  for (int r = 0; r < R; ++r) {
    float* row = sc.s + (size_t)r * sc.npad;
    __m512 vmax = _mm512_set1_ps(-INFINITY);
    for (int j = 0; j < N; j += 16) {
      const __mmask16 k = N - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (N - j)) - 1);
      vmax = _mm512_mask_max_ps(vmax, k, vmax, _mm512_load_ps(row + j));
    }
    const __m512 m = _mm512_set1_ps(_mm512_reduce_max_ps(vmax));
    __m512 vsum = _mm512_setzero_ps();
    for (int j = 0; j < N; j += 16) {
      const __mmask16 k = N - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (N - j)) - 1);
      const __m512 e = exp512(_mm512_sub_ps(_mm512_load_ps(row + j), m));
      _mm512_store_ps(row + j, e);
      vsum = _mm512_mask_add_ps(vsum, k, vsum, e);
    }
    const __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(vsum));
    for (int j = 0; j < N; j += 16) _mm512_store_ps(row + j, _mm512_mul_ps(_mm512_load_ps(row + j), inv));
  }
}

// o[r][c0 .. c0+16W) = Σ_{j<N} p[r][j]·v[j][c0 ..], r < R: broadcast p[r][j], FMA with v row j.
template <int R, int W>
__attribute__((target("avx512f"))) inline void valueTile512(const Scratch& sc, int N, int d, float* o, size_t ldo,
                                                            int c0) {
  __m512 acc[R][W];
  for (int r = 0; r < R; ++r)
    for (int w = 0; w < W; ++w) acc[r][w] = _mm512_setzero_ps();
  for (int j = 0; j < N; ++j) {
    const float* vRow = sc.vp + (size_t)j * d + c0;
    __m512 vv[W];
    for (int w = 0; w < W; ++w) vv[w] = _mm512_loadu_ps(vRow + 16 * w);
    for (int r = 0; r < R; ++r) {
      const __m512 pb = _mm512_set1_ps(sc.s[(size_t)r * sc.npad + j]);
      for (int w = 0; w < W; ++w) acc[r][w] = _mm512_fmadd_ps(pb, vv[w], acc[r][w]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int w = 0; w < W; ++w) _mm512_storeu_ps(o + (size_t)r * ldo + c0 + 16 * w, acc[r][w]);
}

// Rows i0 .. i0+R-1, start to finish: scores, exp, then P·v. Both products run over their
// vectors (npad/16 score columns, d/16 output columns) in ⌈n/4⌉ tiles of near-equal width
// (13 → 3+3+3+4): a 1-vector tile would have only R accumulators, too few to hide FMA latency.
template <int R>
__attribute__((target("avx512f"))) void rowBlock512(const HeadSlice& hs, const Scratch& sc, int i0) {
  const float* q = hs.q + (size_t)i0 * hs.ldq;
  const int nv = sc.npad / 16;
  for (int t = 0, tiles = (nv + 3) / 4, jv = 0; t < tiles; ++t) {
    const int w = (nv - jv) / (tiles - t);
    switch (w) {
      case 4: scoreTile512<R, 4>(q, hs.ldq, sc, hs.d, hs.scale, 16 * jv); break;
      case 3: scoreTile512<R, 3>(q, hs.ldq, sc, hs.d, hs.scale, 16 * jv); break;
      case 2: scoreTile512<R, 2>(q, hs.ldq, sc, hs.d, hs.scale, 16 * jv); break;
      default: scoreTile512<R, 1>(q, hs.ldq, sc, hs.d, hs.scale, 16 * jv); break;
    }
    jv += w;
  }
  softmaxRows512<R>(sc, hs.M);
  if (i0 == 0 && hs.clsRow) std::copy(sc.s, sc.s + hs.M, hs.clsRow);
  float* o = hs.o + (size_t)i0 * hs.ldo;
  const int dv = hs.d / 16;
  for (int t = 0, tiles = (dv + 3) / 4, cv = 0; t < tiles; ++t) {
    const int w = (dv - cv) / (tiles - t);
    switch (w) {
      case 4: valueTile512<R, 4>(sc, hs.M, hs.d, o, hs.ldo, 16 * cv); break;
      case 3: valueTile512<R, 3>(sc, hs.M, hs.d, o, hs.ldo, 16 * cv); break;
      case 2: valueTile512<R, 2>(sc, hs.M, hs.d, o, hs.ldo, 16 * cv); break;
      default: valueTile512<R, 1>(sc, hs.M, hs.d, o, hs.ldo, 16 * cv); break;
    }
    cv += w;
  }
}

}  // namespace

__attribute__((target("avx512f"))) void attendSlice512(const HeadSlice& hs, const Scratch& sc) {
  int i = hs.i0;
  for (; i + kRows512 <= hs.i1; i += kRows512) rowBlock512<kRows512>(hs, sc, i);
  switch (hs.i1 - i) {
    case 5: rowBlock512<5>(hs, sc, i); break;
    case 4: rowBlock512<4>(hs, sc, i); break;
    case 3: rowBlock512<3>(hs, sc, i); break;
    case 2: rowBlock512<2>(hs, sc, i); break;
    case 1: rowBlock512<1>(hs, sc, i); break;
  }
}

}  // namespace evit::cpu
