// The Shunted Transformer's pooling before its head: the mean over an image's tokens.
#include <algorithm>
#include <vector>

#include "ops.h"
#include "thread_pool.h"

namespace evit::cpu {

void meanTokens(float* out, const float* x, int B, int N, int C) {
  pool().parallelFor(B, [&](size_t b0, size_t b1, int) {
    std::vector<double> acc(C);  // double: a float running sum would cost up to N roundings
    for (size_t b = b0; b < b1; ++b) {
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int n = 0; n < N; ++n) {
        const float* row = x + (b * N + n) * C;
        for (int c = 0; c < C; ++c) acc[c] += row[c];
      }
      for (int c = 0; c < C; ++c) out[b * C + c] = (float)(acc[c] / N);
    }
  });
}

}  // namespace evit::cpu
