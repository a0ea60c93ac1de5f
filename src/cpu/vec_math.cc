#include "vec_math.h"

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

}  // namespace

void softmaxRow(float* row, int n) {
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
  if (hasAvx2Fma()) return biasGeluRowAvx2(in, bias, out, n);
  for (int j = 0; j < n; ++j) out[j] = geluScalar(in[j] + (bias ? bias[j] : 0.0f));
}

}  // namespace evit::cpu
