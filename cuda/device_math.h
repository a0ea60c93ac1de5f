// Scalar arithmetic shared by the kernels and the host checks, written so that host
// and device give the same float for the same inputs: plain IEEE operations in a
// fixed order, no contraction-sensitive a*b+c where bit equality is promised.
#pragma once

#include <cmath>

#include "host_device.h"

namespace evit::cuda {

// Exact-erf GELU in fp32, torch's nn.GELU() default: 0.5·x·(1 + erf(x/√2)), written as
// 0.5·x·erfc(-x/√2) so the negative tail keeps its relative accuracy (1 + erf cancels).
EVIT_HD float geluErf(float x) { return 0.5f * x * erfcf(-x * 0.70710678118654752f); }

// Head mean of the class-token score of one token: the heads summed h = 0..heads-1 in
// fp32, then divided by heads, exactly as the CPU op (src/cpu/cls_attention.cc) does,
// so the same probabilities give the same bits and the same top-k decisions.
EVIT_HD float headMean(const float* probs, long headStride, int heads) {
  float acc = 0.0f;
  for (int h = 0; h < heads; ++h) acc += probs[h * headStride];
  return acc / (float)heads;
}

}  // namespace evit::cuda
