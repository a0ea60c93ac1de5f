// Vectorised exp, softmax and exact-erf GELU. AVX2+FMA paths are compiled per
// function (target attribute) and chosen at run time, so the addon still loads
// on CPUs without AVX2; the scalar paths use the same formulas.
#pragma once

#include <immintrin.h>

#include <cmath>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <iterator>

namespace evit::cpu {

// EVIT_CPU_ISA=avx2 or =scalar caps the paths taken, so every path can be tested on a wide CPU.
inline int isaCap() {
  static const int cap = [] {
    const char* v = std::getenv("EVIT_CPU_ISA");
    if (!v) return 2;
    if (std::strcmp(v, "scalar") == 0) return 0;
    if (std::strcmp(v, "avx2") == 0) return 1;
    return 2;
  }();
  return cap;
}

inline bool hasAvx2Fma() {
  static const bool yes = isaCap() >= 1 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
}

inline bool hasAvx512() {
  static const bool yes = isaCap() >= 2 && __builtin_cpu_supports("avx512f");
  return yes;
}

// erfc(z) = t·exp(−z² + P(t)), t = 1/(1 + z/2), for z >= 0 with relative error < 1.2e-7
// (Numerical Recipes' erfcc). P's coefficients, highest degree first, for Horner's rule.
constexpr float kErfcPoly[] = {0.17087277f,  -0.82215223f, 1.48851587f, -1.13520398f, 0.27886807f,
                               -0.18628806f, 0.09678418f,  0.37409196f, 1.00002368f,  -1.26551223f};

// exp(r) ≈ 1 + r + r²·Q(r) on |r| <= ln2/2 (Cephes expf); Q highest degree first.
constexpr float kExpPoly[] = {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f,
                              4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f};

inline float erfcPositive(float z) {
  const float t = 1.0f / (1.0f + 0.5f * z);
  float p = kErfcPoly[0];
  for (size_t i = 1; i < std::size(kErfcPoly); ++i) p = p * t + kErfcPoly[i];
  return t * std::exp(-z * z + p);
}

// 0.5·x·(1 + erf(x/√2)); 1 + erf is taken as 2 − erfc or erfc(−·) so negative x keeps its precision.
inline float geluScalar(float x) {
  const float e = erfcPositive(std::fabs(x) * 0.70710678118654752f);
  return 0.5f * x * (x >= 0.0f ? 2.0f - e : e);
}

// Cephes-style exp: 2^n · p(r) with r = x − n·ln2 split in two constants; ~1 ulp on [-87, 88].
__attribute__((target("avx2,fma"))) inline __m256 exp256(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.3f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(kExpPoly[0]);
  for (size_t i = 1; i < std::size(kExpPoly); ++i) p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kExpPoly[i]));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

__attribute__((target("avx2,fma"))) inline __m256 gelu256(__m256 x) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  const __m256 z = _mm256_mul_ps(_mm256_andnot_ps(sign, x), _mm256_set1_ps(0.70710678118654752f));
  const __m256 t = _mm256_div_ps(_mm256_set1_ps(1.0f), _mm256_fmadd_ps(_mm256_set1_ps(0.5f), z, _mm256_set1_ps(1.0f)));
  __m256 p = _mm256_set1_ps(kErfcPoly[0]);
  for (size_t i = 1; i < std::size(kErfcPoly); ++i) p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(kErfcPoly[i]));
  const __m256 e = _mm256_mul_ps(t, exp256(_mm256_fnmadd_ps(z, z, p)));
  const __m256 positive = _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_GE_OQ);
  const __m256 phi2 = _mm256_blendv_ps(e, _mm256_sub_ps(_mm256_set1_ps(2.0f), e), positive);
  return _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), x), phi2);
}

// 512-bit twins of exp256 / gelu256, same constants.
__attribute__((target("avx512f"))) inline __m512 exp512(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.3f)), _mm512_set1_ps(88.3f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(kExpPoly[0]);
  for (size_t i = 1; i < std::size(kExpPoly); ++i) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kExpPoly[i]));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
  return _mm512_mul_ps(p, _mm512_castsi512_ps(e));
}

__attribute__((target("avx512f"))) inline __m512 gelu512(__m512 x) {
  const __m512 z = _mm512_mul_ps(_mm512_abs_ps(x), _mm512_set1_ps(0.70710678118654752f));
  const __m512 t = _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_fmadd_ps(_mm512_set1_ps(0.5f), z, _mm512_set1_ps(1.0f)));
  __m512 p = _mm512_set1_ps(kErfcPoly[0]);
  for (size_t i = 1; i < std::size(kErfcPoly); ++i) p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(kErfcPoly[i]));
  const __m512 e = _mm512_mul_ps(t, exp512(_mm512_fnmadd_ps(z, z, p)));
  const __mmask16 positive = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_GE_OQ);
  const __m512 phi2 = _mm512_mask_blend_ps(positive, e, _mm512_sub_ps(_mm512_set1_ps(2.0f), e));
  return _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), x), phi2);
}

// row[j] = exp(row[j] − max) / Σ over one row of n floats.
void softmaxRow(float* row, int n);

// y[j] += a · x[j] over n floats.
void axpyRow(float a, const float* x, float* y, int n);

// out[j] = gelu(in[j] + bias[j]) over n floats (in may equal out; bias may be null).
void biasGeluRow(const float* in, const float* bias, float* out, int n);

}  // namespace evit::cpu
