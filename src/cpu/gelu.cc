#include <cmath>

#include "ops.h"
#include "thread_pool.h"

namespace evit::cpu {

void gelu(float* x, long n) {
  pool().parallelFor(n, [&](size_t i0, size_t i1, int) {
    for (size_t i = i0; i < i1; ++i) x[i] = 0.5f * x[i] * (1.0f + std::erf(x[i] * 0.70710678118654752f));
  });
}

}  // namespace evit::cpu
