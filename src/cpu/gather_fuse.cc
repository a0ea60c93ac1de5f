#include <algorithm>
#include <vector>

#include "ops.h"
#include "thread_pool.h"
#include "vec_math.h"

namespace evit::cpu {

void gatherFuse(float* out, int32_t* originsOut, const float* x, const float* scores, const int32_t* idx,
                const int32_t* originsIn, int B, int N, int C, int k, bool fuse, int32_t fusedOrigin) {
  const int M = N - 1, outN = 1 + k + (fuse ? 1 : 0), outTokens = k + (fuse ? 1 : 0);
  ThreadPool& tp = pool();
  const int T = tp.size();
  // Token j of image b is dropped iff dropped[b*M + j]; built once, read by every part.
  std::vector<char> dropped(fuse ? (size_t)B * M : 0, 1);
  if (fuse)
    for (int b = 0; b < B; ++b)
      for (int i = 0; i < k; ++i) dropped[(size_t)b * M + idx[(size_t)b * k + i]] = 0;

  // Each image is cut into T parts so a single image still uses every thread: part t copies
  // kept rows [t·k/T, (t+1)·k/T) and sums fused channels [t·C/T, (t+1)·C/T) in token order.
  tp.parallelFor((size_t)B * T, [&](size_t p0, size_t p1, int) {
    for (size_t p = p0; p < p1; ++p) {
      const int b = (int)(p / T), t = (int)(p % T);
      const float* xb = x + (size_t)b * N * C;
      const float* s = scores + (size_t)b * M;
      const int32_t* ib = idx + (size_t)b * k;
      float* ob = out + (size_t)b * outN * C;
      if (t == 0) std::copy(xb, xb + C, ob);
      for (int i = k * t / T; i < k * (t + 1) / T; ++i) {
        const int j = ib[i];
        std::copy(xb + (size_t)(1 + j) * C, xb + (size_t)(2 + j) * C, ob + (size_t)(1 + i) * C);
        if (originsOut) originsOut[(size_t)b * outTokens + i] = originsIn ? originsIn[(size_t)b * M + j] : j;
      }
      if (!fuse) continue;
      // Raw scores as weights, no renormalisation (SPEC §1).
      const int c0 = C * t / T, c1 = C * (t + 1) / T;
      float* f = ob + (size_t)(1 + k) * C;
      std::fill(f + c0, f + c1, 0.0f);
      const char* drop = dropped.data() + (size_t)b * M;
      for (int j = 0; j < M; ++j)
        if (drop[j]) axpyRow(s[j], xb + (size_t)(1 + j) * C + c0, f + c0, c1 - c0);
      if (t == 0 && originsOut) originsOut[(size_t)b * outTokens + k] = fusedOrigin;
    }
  });
}

}  // namespace evit::cpu
