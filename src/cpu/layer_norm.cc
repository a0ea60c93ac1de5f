#include <immintrin.h>

#include <cmath>

#include "ops.h"
#include "thread_pool.h"
#include "vec_math.h"

namespace evit::cpu {

namespace {

// Mean, variance and centring in double: rounding the mean to float would cost
// |mean|·2^-24/σ per element on rows with a large mean.
void layerNormRowScalar(const float* xr, float* yr, int C, const float* w, const float* b, float eps) {
  double sum = 0;
  for (int c = 0; c < C; ++c) sum += xr[c];
  const double mean = sum / C;
  double sq = 0;
  for (int c = 0; c < C; ++c) {
    const double dv = xr[c] - mean;
    sq += dv * dv;
  }
  const double inv = 1.0 / std::sqrt(sq / C + eps);
  for (int c = 0; c < C; ++c) yr[c] = (float)((xr[c] - mean) * inv) * w[c] + b[c];
}

__attribute__((target("avx2,fma"))) double hsum256d(__m256d v) {
  __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
  return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}

// The same arithmetic four doubles at a time; the tail is done in scalar double.
__attribute__((target("avx2,fma"))) void layerNormRowAvx2(const float* xr, float* yr, int C, const float* w,
                                                          const float* b, float eps) {
  const int C4 = C & ~3;
  __m256d acc = _mm256_setzero_pd();
  for (int c = 0; c < C4; c += 4) acc = _mm256_add_pd(acc, _mm256_cvtps_pd(_mm_loadu_ps(xr + c)));
  double sum = hsum256d(acc);
  for (int c = C4; c < C; ++c) sum += xr[c];
  const double mean = sum / C;
  const __m256d m = _mm256_set1_pd(mean);
  __m256d sq = _mm256_setzero_pd();
  for (int c = 0; c < C4; c += 4) {
    const __m256d dv = _mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(xr + c)), m);
    sq = _mm256_fmadd_pd(dv, dv, sq);
  }
  double sqs = hsum256d(sq);
  for (int c = C4; c < C; ++c) sqs += (xr[c] - mean) * (xr[c] - mean);
  const double inv = 1.0 / std::sqrt(sqs / C + eps);
  const __m256d vinv = _mm256_set1_pd(inv);
  for (int c = 0; c < C4; c += 4) {
    const __m256d n = _mm256_mul_pd(_mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(xr + c)), m), vinv);
    _mm_storeu_ps(yr + c, _mm_fmadd_ps(_mm256_cvtpd_ps(n), _mm_loadu_ps(w + c), _mm_loadu_ps(b + c)));
  }
  for (int c = C4; c < C; ++c) yr[c] = (float)((xr[c] - mean) * inv) * w[c] + b[c];
}

}  // namespace

void layerNorm(float* out, const float* x, long rowStride, const float* w, const float* b, int rows, int C, float eps) {
  const bool avx2 = hasAvx2Fma();
  pool().parallelFor(rows, [&](size_t r0, size_t r1, int) {
    for (size_t r = r0; r < r1; ++r) {
      if (avx2)
        layerNormRowAvx2(x + r * rowStride, out + r * C, C, w, b, eps);
      else
        layerNormRowScalar(x + r * rowStride, out + r * C, C, w, b, eps);
    }
  });
}

}  // namespace evit::cpu
