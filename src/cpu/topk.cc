#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "ops.h"
#include "thread_pool.h"

namespace evit::cpu {

void topk(const float* scores, int B, int M, int k, int32_t* idx) {
  pool().parallelFor(B, [&](size_t b0, size_t b1, int) {
    std::vector<int32_t> order(M);
    for (size_t b = b0; b < b1; ++b) {
      const float* s = scores + b * M;
      std::iota(order.begin(), order.end(), 0);
      // A strict weak order: larger score first, equal scores by index, NaN last.
      auto before = [s](int32_t a, int32_t c) {
        const float sa = s[a], sc = s[c];
        const bool na = std::isnan(sa), nc = std::isnan(sc);
        if (na != nc) return nc;
        if (!na && sa != sc) return sa > sc;
        return a < c;
      };
      std::partial_sort(order.begin(), order.begin() + k, order.end(), before);
      std::copy(order.begin(), order.begin() + k, idx + b * k);
    }
  });
}

}  // namespace evit::cpu
