// AVX2 attention tiles: 8 floats per vector. See cls_attention.cc for the scheme.
#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "attention_tiles.h"
#include "vec_math.h"

namespace evit::cpu {

namespace {

// ------------------------------------------------------------------------------------------
// AVX2: 8 floats per vector, 16 registers, so tiles are 2 vectors (16 columns) wide. npad is a
// multiple of 16 and d of 16, so no tile is ever partial. Same steps as the AVX-512 path.

template <int R>
__attribute__((target("avx2,fma"))) inline void scoreTileAvx2(const float* q, size_t ld, const Scratch& sc, int d,
                                                              float scale, int j0) {
  __m256 acc[R][2];
  for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
  for (int c = 0; c < d; ++c) {
    const float* ktRow = sc.kt + (size_t)c * sc.npad + j0;
    const __m256 k0 = _mm256_load_ps(ktRow), k1 = _mm256_load_ps(ktRow + 8);
    for (int r = 0; r < R; ++r) {
      const __m256 qb = _mm256_set1_ps(q[(size_t)r * ld + c]);
      acc[r][0] = _mm256_fmadd_ps(qb, k0, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(qb, k1, acc[r][1]);
    }
  }
  const __m256 vs = _mm256_set1_ps(scale);
  for (int r = 0; r < R; ++r) {
    float* sRow = sc.s + (size_t)r * sc.npad + j0;
    _mm256_store_ps(sRow, _mm256_mul_ps(acc[r][0], vs));
    _mm256_store_ps(sRow + 8, _mm256_mul_ps(acc[r][1], vs));
  }
}

// Lanes at or past the end of the row are -inf for the max and 0 for the sum.
template <int R>
__attribute__((target("avx2,fma"))) inline void softmaxRowsAvx2(const Scratch& sc, int N) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256 ninf = _mm256_set1_ps(-INFINITY);
  for (int r = 0; r < R; ++r) {
    float* row = sc.s + (size_t)r * sc.npad;
    __m256 vmax = ninf;
    for (int j = 0; j < N; j += 8) {
      const __m256 live = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(N - j), lane));
      vmax = _mm256_max_ps(vmax, _mm256_blendv_ps(ninf, _mm256_load_ps(row + j), live));
    }
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(vmax), _mm256_extractf128_ps(vmax, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_shuffle_ps(m4, m4, 1));
    const __m256 m = _mm256_broadcastss_ps(m4);
    __m256 vsum = _mm256_setzero_ps();
    for (int j = 0; j < N; j += 8) {
      const __m256 live = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(N - j), lane));
      const __m256 e = exp256(_mm256_sub_ps(_mm256_load_ps(row + j), m));
      _mm256_store_ps(row + j, e);
      vsum = _mm256_add_ps(vsum, _mm256_and_ps(e, live));
    }
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(vsum), _mm256_extractf128_ps(vsum, 1));
    s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    s4 = _mm_add_ss(s4, _mm_shuffle_ps(s4, s4, 1));
    const __m256 inv = _mm256_set1_ps(1.0f / _mm_cvtss_f32(s4));
    for (int j = 0; j < N; j += 8) _mm256_store_ps(row + j, _mm256_mul_ps(_mm256_load_ps(row + j), inv));
  }
}

template <int R>
__attribute__((target("avx2,fma"))) inline void valueTileAvx2(const Scratch& sc, int N, int d, float* o, size_t ldo,
                                                              int c0) {
  __m256 acc[R][2];
  for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
  for (int j = 0; j < N; ++j) {
    const float* vRow = sc.vp + (size_t)j * d + c0;
    const __m256 v0 = _mm256_loadu_ps(vRow), v1 = _mm256_loadu_ps(vRow + 8);
    for (int r = 0; r < R; ++r) {
      const __m256 pb = _mm256_set1_ps(sc.s[(size_t)r * sc.npad + j]);
      acc[r][0] = _mm256_fmadd_ps(pb, v0, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(pb, v1, acc[r][1]);
    }
  }
  for (int r = 0; r < R; ++r) {
    _mm256_storeu_ps(o + (size_t)r * ldo + c0, acc[r][0]);
    _mm256_storeu_ps(o + (size_t)r * ldo + c0 + 8, acc[r][1]);
  }
}

template <int R>
__attribute__((target("avx2,fma"))) void rowBlockAvx2(const HeadSlice& hs, const Scratch& sc, int i0) {
  const float* q = hs.q + (size_t)i0 * hs.ldq;
  for (int j0 = 0; j0 < sc.npad; j0 += 16) scoreTileAvx2<R>(q, hs.ldq, sc, hs.d, hs.scale, j0);
  softmaxRowsAvx2<R>(sc, hs.M);
  if (i0 == 0 && hs.clsRow) std::copy(sc.s, sc.s + hs.M, hs.clsRow);
  float* o = hs.o + (size_t)i0 * hs.ldo;
  for (int c0 = 0; c0 < hs.d; c0 += 16) valueTileAvx2<R>(sc, hs.M, hs.d, o, hs.ldo, c0);
}

}  // namespace

__attribute__((target("avx2,fma"))) void attendSliceAvx2(const HeadSlice& hs, const Scratch& sc) {
  int i = hs.i0;
  for (; i + kRowsAvx2 <= hs.i1; i += kRowsAvx2) rowBlockAvx2<kRowsAvx2>(hs, sc, i);
  switch (hs.i1 - i) {
    case 5: rowBlockAvx2<5>(hs, sc, i); break;
    case 4: rowBlockAvx2<4>(hs, sc, i); break;
    case 3: rowBlockAvx2<3>(hs, sc, i); break;
    case 2: rowBlockAvx2<2>(hs, sc, i); break;
    case 1: rowBlockAvx2<1>(hs, sc, i); break;
  }
}

}  // namespace evit::cpu
