#include "vec_math.h"

// GCC 12's AVX-512 headers build masked intrinsics from an undefined __Y and warn about it.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

#include <algorithm>

namespace evit::cpu {

namespace {

__attribute__((target("avx2,fma"))) float hmax256(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
  return _mm_cvtss_f32(m);
}

__attribute__((target("avx2,fma"))) float hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

__attribute__((target("avx2,fma"))) void softmaxRowAvx2(float* row, int n) {
  int j = 0;
  __m256 vmax = _mm256_set1_ps(-INFINITY);
  for (; j + 8 <= n; j += 8) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(row + j));
  float mx = hmax256(vmax);
  for (; j < n; ++j) mx = std::max(mx, row[j]);
  const __m256 m = _mm256_set1_ps(mx);
  __m256 vsum = _mm256_setzero_ps();
  for (j = 0; j + 8 <= n; j += 8) {
    const __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(row + j), m));
    _mm256_storeu_ps(row + j, e);
    vsum = _mm256_add_ps(vsum, e);
  }
  float sum = hsum256(vsum);
  if (j < n) {
    // The tail goes through the same vector exp so every element is computed alike.
    alignas(32) float tail[8];
    std::fill(tail, tail + 8, -INFINITY);
    std::copy(row + j, row + n, tail);
    const __m256 e = exp256(_mm256_sub_ps(_mm256_load_ps(tail), m));
    _mm256_store_ps(tail, e);
    for (int i = 0; j + i < n; ++i) {
      row[j + i] = tail[i];
      sum += tail[i];
    }
  }
  const __m256 inv = _mm256_set1_ps(1.0f / sum);
  for (j = 0; j + 8 <= n; j += 8) _mm256_storeu_ps(row + j, _mm256_mul_ps(_mm256_loadu_ps(row + j), inv));
  const float s = 1.0f / sum;
  for (; j < n; ++j) row[j] *= s;
}

__attribute__((target("avx2,fma"))) void biasGeluRowAvx2(const float* in, const float* bias, float* out, int n) {
  int j = 0;
  for (; j + 8 <= n; j += 8) {
    __m256 v = _mm256_loadu_ps(in + j);
    if (bias) v = _mm256_add_ps(v, _mm256_loadu_ps(bias + j));
    _mm256_storeu_ps(out + j, gelu256(v));
  }
  if (j < n) {
    alignas(32) float tail[8] = {0};
    for (int i = 0; j + i < n; ++i) tail[i] = in[j + i] + (bias ? bias[j + i] : 0.0f);
    _mm256_store_ps(tail, gelu256(_mm256_load_ps(tail)));
    for (int i = 0; j + i < n; ++i) out[j + i] = tail[i];
  }
}

// Masked loads cover the tail, so every element goes through the same vector code.
__attribute__((target("avx512f"))) void softmaxRowAvx512(float* row, int n) {
  __m512 vmax = _mm512_set1_ps(-INFINITY);
  for (int j = 0; j < n; j += 16) {
    const __mmask16 k = n - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - j)) - 1);
    vmax = _mm512_mask_max_ps(vmax, k, vmax, _mm512_maskz_loadu_ps(k, row + j));
  }
  const __m512 m = _mm512_set1_ps(_mm512_reduce_max_ps(vmax));
  __m512 vsum = _mm512_setzero_ps();
  for (int j = 0; j < n; j += 16) {
    const __mmask16 k = n - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - j)) - 1);
    const __m512 e = exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, row + j), m));
    _mm512_mask_storeu_ps(row + j, k, e);
    vsum = _mm512_mask_add_ps(vsum, k, vsum, e);
  }
  const __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(vsum));
  for (int j = 0; j < n; j += 16) {
    const __mmask16 k = n - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - j)) - 1);
    _mm512_mask_storeu_ps(row + j, k, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, row + j), inv));
  }
}

__attribute__((target("avx512f"))) void biasGeluRowAvx512(const float* in, const float* bias, float* out, int n) {
  for (int j = 0; j < n; j += 16) {
    const __mmask16 k = n - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - j)) - 1);
    __m512 v = _mm512_maskz_loadu_ps(k, in + j);
    if (bias) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(k, bias + j));
    _mm512_mask_storeu_ps(out + j, k, gelu512(v));
  }
}

__attribute__((target("avx512f"))) void axpyRowAvx512(float a, const float* x, float* y, int n) {
  const __m512 va = _mm512_set1_ps(a);
  for (int j = 0; j < n; j += 16) {
    const __mmask16 k = n - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - j)) - 1);
    _mm512_mask_storeu_ps(y + j, k, _mm512_fmadd_ps(va, _mm512_maskz_loadu_ps(k, x + j), _mm512_maskz_loadu_ps(k, y + j)));
  }
}

__attribute__((target("avx2,fma"))) void axpyRowAvx2(float a, const float* x, float* y, int n) {
  const __m256 va = _mm256_set1_ps(a);
  int j = 0;
  for (; j + 8 <= n; j += 8) _mm256_storeu_ps(y + j, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + j), _mm256_loadu_ps(y + j)));
  for (; j < n; ++j) y[j] = std::fma(a, x[j], y[j]);
}

}  // namespace

void axpyRow(float a, const float* x, float* y, int n) {
  if (hasAvx512()) return axpyRowAvx512(a, x, y, n);
  if (hasAvx2Fma()) return axpyRowAvx2(a, x, y, n);
  for (int j = 0; j < n; ++j) y[j] += a * x[j];
}

void softmaxRow(float* row, int n) {
  if (hasAvx512()) return softmaxRowAvx512(row, n);
  if (hasAvx2Fma()) return softmaxRowAvx2(row, n);
  float mx = row[0];
  for (int j = 1; j < n; ++j) mx = std::max(mx, row[j]);
  float sum = 0;
  for (int j = 0; j < n; ++j) {
    row[j] = std::exp(row[j] - mx);
    sum += row[j];
  }
  const float inv = 1.0f / sum;
  for (int j = 0; j < n; ++j) row[j] *= inv;
}

void biasGeluRow(const float* in, const float* bias, float* out, int n) {
  if (hasAvx512()) return biasGeluRowAvx512(in, bias, out, n);
  if (hasAvx2Fma()) return biasGeluRowAvx2(in, bias, out, n);
  for (int j = 0; j < n; ++j) out[j] = geluScalar(in[j] + (bias ? bias[j] : 0.0f));
}

}  // namespace evit::cpu
