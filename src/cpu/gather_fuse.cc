#include <algorithm>
#include <vector>

#include "ops.h"
#include "thread_pool.h"

namespace evit::cpu {

void gatherFuse(const float* x, int B, int N, int C, const float* scores, const int32_t* idx, int k, bool fuse,
                float* out, const int32_t* originsIn, int32_t* originsOut, int32_t fusedOrigin) {
  const int M = N - 1, outN = 1 + k + (fuse ? 1 : 0);
  pool().parallelFor(B, [&](size_t b0, size_t b1, int) {
    std::vector<char> kept(M);
    for (size_t b = b0; b < b1; ++b) {
      const float* xb = x + b * N * C;
      const float* s = scores + b * M;
      const int32_t* ib = idx + b * k;
      float* ob = out + b * outN * C;
      std::copy(xb, xb + C, ob);
      std::fill(kept.begin(), kept.end(), 0);
      for (int i = 0; i < k; ++i) {
        const int j = ib[i];
        kept[j] = 1;
        std::copy(xb + (size_t)(1 + j) * C, xb + (size_t)(2 + j) * C, ob + (size_t)(1 + i) * C);
        if (originsOut) originsOut[b * (k + fuse) + i] = originsIn ? originsIn[b * M + j] : j;
      }
      if (!fuse) continue;
      // Raw scores as weights, summed in token order: no renormalisation (SPEC §1).
      float* f = ob + (size_t)(1 + k) * C;
      std::fill(f, f + C, 0.0f);
      for (int j = 0; j < M; ++j) {
        if (kept[j]) continue;
        const float w = s[j];
        const float* row = xb + (size_t)(1 + j) * C;
        for (int c = 0; c < C; ++c) f[c] += w * row[c];
      }
      if (originsOut) originsOut[b * (k + 1) + k] = fusedOrigin;
    }
  });
}

}  // namespace evit::cpu
