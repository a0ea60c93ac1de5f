#include <immintrin.h>

#include <algorithm>

#include "attention_tiles.h"

namespace evit::cpu {

namespace {

// In-register transpose of the 8×8 block r[0..7] (rows) into its columns.
__attribute__((target("avx2"))) inline void transpose8x8(__m256 r[8]) {
  __m256 t[8], u[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);      // a0 b0 a1 b1 | a4 b4 a5 b5
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);  // a2 b2 a3 b3 | a6 b6 a7 b7
  }
  for (int i = 0; i < 8; i += 4) {
    u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);      // a0 b0 c0 d0 | a4 b4 c4 d4
    u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);  // a1 b1 c1 d1 | a5 b5 c5 d5
    u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);      // column i: low halves of rows 0-3, 4-7
    r[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);  // column i + 4: high halves
  }
}

// kt = kᵀ zero-padded to npad columns, vp = v rows made contiguous. k is read 8 rows × 8
// columns at a time and transposed in registers: element by element, reading k down its
// columns (each row of qkv on its own 4 KiB page) took an eighth of the whole op at N = 197.
// Used by the AVX-512 path too: every AVX-512 CPU has AVX2.
}  // namespace

__attribute__((target("avx2"))) void packKv(const HeadSlice& hs, const Scratch& sc) {
  const int M = hs.M, d = hs.d, npad = sc.npad;
  int j0 = 0;
  for (; j0 + 8 <= M; j0 += 8) {
    for (int c0 = 0; c0 < d; c0 += 8) {
      __m256 r[8];
      for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(hs.k + (size_t)(j0 + i) * hs.ldk + c0);
      transpose8x8(r);
      for (int i = 0; i < 8; ++i) _mm256_store_ps(sc.kt + (size_t)(c0 + i) * npad + j0, r[i]);
    }
  }
  for (; j0 < M; ++j0)
    for (int c = 0; c < d; ++c) sc.kt[(size_t)c * npad + j0] = hs.k[(size_t)j0 * hs.ldk + c];
  for (int c = 0; c < d; ++c) std::fill(sc.kt + (size_t)c * npad + M, sc.kt + (size_t)(c + 1) * npad, 0.0f);
  for (int j = 0; j < M; ++j)
    std::copy(hs.v + (size_t)j * hs.ldv, hs.v + (size_t)j * hs.ldv + d, sc.vp + (size_t)j * d);
}

}  // namespace evit::cpu
