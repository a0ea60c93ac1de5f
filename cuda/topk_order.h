// The top-k ranking shared by the topkGatherFuse kernel and the host checks: one
// 64-bit key per score whose unsigned order is the ranking (score descending, ties
// to the lower index, NaN below everything, -0 equal to +0), as src/cpu/topk.cc,
// and the bitonic network that sorts those keys in shared memory.
#pragma once

#include <cstdint>
#include <cstring>

#include "host_device.h"

namespace evit::cuda {

EVIT_HD uint32_t floatBits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
#endif
}

// Score bits in the high half (IEEE order made unsigned: negatives have every bit
// flipped, positives the sign bit set), the inverted index in the low half.
EVIT_HD uint64_t rankKey(float s, int32_t index) {
  const uint32_t bits = floatBits(s);
  uint32_t ordered = (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) ordered = 0;  // NaN
  if ((bits & 0x7FFFFFFFu) == 0) ordered = 0x80000000u;  // -0 ties with +0
  return ((uint64_t)ordered << 32) | (uint32_t)(0xFFFFFFFFu - (uint32_t)index);
}

EVIT_HD int32_t keyIndex(uint64_t key) { return (int32_t)(0xFFFFFFFFu - (uint32_t)key); }

// Padding for the power-of-two sort: below every real key (a real key's low half is
// 0xFFFFFFFF - index > 0).
constexpr uint64_t kPadKey = 0;

// Keys the network sorts: the next power of two >= m (at least 2).
EVIT_HD int bitonicSize(int m) {
  int n = 2;
  while (n < m) n <<= 1;
  return n;
}

// Compare-exchange p (0 <= p < n/2) of the step (size, stride) of the bitonic network
// that sorts n keys descending: pair (i, i + stride), i = the p-th index whose stride
// bit is clear. Blocks of `size` with (i & size) == 0 go descending, the others
// ascending, so the last round (size == n) leaves the whole array descending.
EVIT_HD void bitonicCompareExchange(uint64_t* keys, int p, int size, int stride) {
  const int i = 2 * stride * (p / stride) + p % stride;
  const int j = i + stride;
  const uint64_t a = keys[i], b = keys[j];
  const bool descending = (i & size) == 0;
  if (descending ? a < b : a > b) {
    keys[i] = b;
    keys[j] = a;
  }
}

// The whole network run by one thread: what the kernel does with n/2 threads per step
// and a barrier between steps. The host checks call this.
inline void bitonicSortSerial(uint64_t* keys, int n) {
  for (int size = 2; size <= n; size <<= 1)
    for (int stride = size / 2; stride > 0; stride >>= 1)
      for (int p = 0; p < n / 2; ++p) bitonicCompareExchange(keys, p, size, stride);
}

}  // namespace evit::cuda
