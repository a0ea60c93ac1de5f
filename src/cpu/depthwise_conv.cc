// 3×3 depthwise convolution (stride 1, zero padding 1) on NHWC images, with the add that
// every use of it in the Shunted Transformer has (u + dw(u) in the MLP, v + lc(v) and
// o + lc(v) in attention) and the MLP's GELU fused: one pass over the output. The SIMD paths
// hold one vector of channels' nine taps in registers and sweep it along an output row, so
// each output vector is nine FMAs on loads from L1 and one store, GELU applied in registers.
#include <immintrin.h>

#include "ops.h"
#include "thread_pool.h"
#include "vec_math.h"

// GCC 12's AVX-512 headers build masked intrinsics from an undefined __Y and warn about it.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

namespace evit::cpu {

namespace {

struct DwArgs {
  float* out;
  const float* x;
  long ldx;
  const float* add;
  long ldAdd;
  const float* Wt;  // [9, C]
  const float* b;
  int H, W, C;
  bool gelu;
};

// Pixel (y, x) of image bi: its offset in pixels.
inline size_t pixel(const DwArgs& a, int bi, int y, int x) { return ((size_t)bi * a.H + y) * a.W + x; }

// Channels [c0, c1) of output row y of image bi, one channel at a time (tails and CPUs without AVX2).
void dwRowScalar(const DwArgs& a, int bi, int y, int c0, int c1) {
  for (int x = 0; x < a.W; ++x) {
    const size_t p = pixel(a, bi, y, x);
    for (int c = c0; c < c1; ++c) {
      float acc = a.b[c];
      for (int dy = -1; dy <= 1; ++dy) {
        if (y + dy < 0 || y + dy >= a.H) continue;
        for (int dx = -1; dx <= 1; ++dx) {
          if (x + dx < 0 || x + dx >= a.W) continue;
          acc += a.Wt[(size_t)((dy + 1) * 3 + dx + 1) * a.C + c] * a.x[pixel(a, bi, y + dy, x + dx) * a.ldx + c];
        }
      }
      if (a.add) acc += a.add[p * a.ldAdd + c];
      a.out[p * a.C + c] = a.gelu ? geluScalar(acc) : acc;
    }
  }
}

__attribute__((target("avx512f"))) void dwRow512(const DwArgs& a, int bi, int y) {
  const int C = a.C;
  for (int c0 = 0; c0 < C; c0 += 16) {
    const __mmask16 m = C - c0 >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (C - c0)) - 1);
    __m512 w[9];
    for (int t = 0; t < 9; ++t) w[t] = _mm512_maskz_loadu_ps(m, a.Wt + (size_t)t * C + c0);
    const __m512 bias = _mm512_maskz_loadu_ps(m, a.b + c0);
    for (int x = 0; x < a.W; ++x) {
      __m512 acc = bias;
      for (int dy = -1; dy <= 1; ++dy) {
        if (y + dy < 0 || y + dy >= a.H) continue;
        const float* row = a.x + pixel(a, bi, y + dy, 0) * a.ldx + c0;
        for (int dx = -1; dx <= 1; ++dx) {
          if (x + dx < 0 || x + dx >= a.W) continue;
          acc = _mm512_fmadd_ps(w[(dy + 1) * 3 + dx + 1], _mm512_maskz_loadu_ps(m, row + (size_t)(x + dx) * a.ldx), acc);
        }
      }
      const size_t p = pixel(a, bi, y, x);
      if (a.add) acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(m, a.add + p * a.ldAdd + c0));
      if (a.gelu) acc = gelu512(acc);
      _mm512_mask_storeu_ps(a.out + p * C + c0, m, acc);
    }
  }
}

__attribute__((target("avx2,fma"))) void dwRowAvx2(const DwArgs& a, int bi, int y) {
  const int C = a.C, full = C / 8 * 8;
  for (int c0 = 0; c0 < full; c0 += 8) {
    __m256 w[9];
    for (int t = 0; t < 9; ++t) w[t] = _mm256_loadu_ps(a.Wt + (size_t)t * C + c0);
    const __m256 bias = _mm256_loadu_ps(a.b + c0);
    for (int x = 0; x < a.W; ++x) {
      __m256 acc = bias;
      for (int dy = -1; dy <= 1; ++dy) {
        if (y + dy < 0 || y + dy >= a.H) continue;
        const float* row = a.x + pixel(a, bi, y + dy, 0) * a.ldx + c0;
        for (int dx = -1; dx <= 1; ++dx) {
          if (x + dx < 0 || x + dx >= a.W) continue;
          acc = _mm256_fmadd_ps(w[(dy + 1) * 3 + dx + 1], _mm256_loadu_ps(row + (size_t)(x + dx) * a.ldx), acc);
        }
      }
      const size_t p = pixel(a, bi, y, x);
      if (a.add) acc = _mm256_add_ps(acc, _mm256_loadu_ps(a.add + p * a.ldAdd + c0));
      if (a.gelu) acc = gelu256(acc);
      _mm256_storeu_ps(a.out + p * C + c0, acc);
    }
  }
  if (full < C) dwRowScalar(a, bi, y, full, C);
}

}  // namespace

void depthwiseWeightToTaps(float* Wt, const float* W, int C) {
  for (int c = 0; c < C; ++c)
    for (int t = 0; t < 9; ++t) Wt[(size_t)t * C + c] = W[(size_t)c * 9 + t];
}

void depthwise3x3(float* out, const float* x, long ldx, const float* add, long ldAdd, const float* Wt, const float* b,
                  int B, int H, int W, int C, bool gelu) {
  const DwArgs a{out, x, ldx, add, ldAdd, Wt, b, H, W, C, gelu};
  const bool use512 = hasAvx512(), avx2 = hasAvx2Fma();
  pool().parallelFor((size_t)B * H, [&](size_t r0, size_t r1, int) {
    for (size_t r = r0; r < r1; ++r) {
      const int bi = (int)(r / H), y = (int)(r % H);
      if (use512)
        dwRow512(a, bi, y);
      else if (avx2)
        dwRowAvx2(a, bi, y);
      else
        dwRowScalar(a, bi, y, 0, C);
    }
  });
}

}  // namespace evit::cpu
