#include <cmath>

#include "ops.h"
#include "thread_pool.h"

namespace evit::cpu {

void layerNorm(const float* x, float* out, int rows, int C, const float* w, const float* b, float eps) {
  pool().parallelFor(rows, [&](size_t r0, size_t r1, int) {
    for (size_t r = r0; r < r1; ++r) {
      const float* xr = x + r * C;
      float* yr = out + r * C;
      // Two passes in double keep the variance exact for rows with a large mean.
      double sum = 0;
      for (int c = 0; c < C; ++c) sum += xr[c];
      const double mean = sum / C;
      double sq = 0;
      for (int c = 0; c < C; ++c) {
        const double dv = xr[c] - mean;
        sq += dv * dv;
      }
      const double inv = 1.0 / std::sqrt(sq / C + eps);
      // Centre in double too: rounding the mean to float would cost |mean|·2^-24/σ per element.
      for (int c = 0; c < C; ++c) yr[c] = (float)((xr[c] - mean) * inv) * w[c] + b[c];
    }
  });
}

}  // namespace evit::cpu
