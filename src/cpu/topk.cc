#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <vector>

#include "ops.h"
#include "thread_pool.h"

namespace evit::cpu {

namespace {

// One integer key per score whose order is the ranking: score descending, then index
// ascending, NaN below everything. Integer compares keep the selection branch-light.
inline uint64_t rankKey(float s, int32_t index) {
  uint32_t bits;
  std::memcpy(&bits, &s, sizeof bits);
  // IEEE floats ordered as unsigned integers: flip all bits of negatives, the sign bit of positives.
  uint32_t ordered = (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
  if (std::isnan(s)) ordered = 0;
  if (s == 0.0f) ordered = 0x80000000u;  // -0 ties with +0
  return ((uint64_t)ordered << 32) | (uint32_t)(0xFFFFFFFFu - (uint32_t)index);
}

}  // namespace

void topk(int32_t* idx, const float* scores, int B, int M, int k) {
  pool().parallelFor(B, [&](size_t b0, size_t b1, int) {
    std::vector<uint64_t> keys(M);
    for (size_t b = b0; b < b1; ++b) {
      const float* s = scores + b * M;
      for (int j = 0; j < M; ++j) keys[j] = rankKey(s[j], j);
      if (k < M) std::nth_element(keys.begin(), keys.begin() + k, keys.end(), std::greater<uint64_t>());
      std::sort(keys.begin(), keys.begin() + k, std::greater<uint64_t>());
      for (int i = 0; i < k; ++i) idx[b * k + i] = (int32_t)(0xFFFFFFFFu - (uint32_t)keys[i]);
    }
  });
}

}  // namespace evit::cpu
