// The exact softmax both attention kernels run on a whole score row held on chip: one warp per
// row, fp32 max / exp / sum over all N columns (no online rescaling).
#pragma once

#include <cmath>

#include "element_type.cuh"

namespace evit::cuda {

// row[0, N) becomes its softmax in place and row[N, padded) zero (the P·V operand past the last
// key); with probsOut non-null the N probabilities are written there too.
__device__ __forceinline__ void warpSoftmaxRow(float* row, int N, int padded, float* probsOut, int lane) {
  float mx = -INFINITY;
  for (int j = lane; j < N; j += 32) mx = fmaxf(mx, row[j]);
  mx = warpMax(mx);
  float sum = 0.0f;
  for (int j = lane; j < N; j += 32) {
    const float e = expf(row[j] - mx);
    row[j] = e;
    sum += e;
  }
  const float inv = 1.0f / warpSum(sum);
  for (int j = lane; j < padded; j += 32) {
    const float p = j < N ? row[j] * inv : 0.0f;
    row[j] = p;
    if (probsOut && j < N) probsOut[j] = p;
  }
}

}  // namespace evit::cuda
