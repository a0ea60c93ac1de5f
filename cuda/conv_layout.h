// Host-side layouts of the convolution weights the CUDA kernels read, relaid once at upload
// (and by the tests): a conv's GEMM depth padded to whole 16-byte chunks of a 16-bit type, so
// every convolution can take the tensor-core GEMM, and depthwise taps channel-contiguous.
#pragma once

#include <cstddef>

namespace evit::cuda {

// The GEMM depth of a k×k conv over Cin channels: k·k·Cin rounded up to a multiple of 8 (a
// cp.async chunk of 16-bit elements; the extra columns are zero in both operands).
inline int convDepth(int Cin, int k) { return (k * k * Cin + 7) / 8 * 8; }

// Wp [Cout, convDepth(Cin, k)] = W [Cout, Cin, k, k] (torch layout) in (ky, kx, c) order, zero
// past k·k·Cin: the column order of im2col. Wp must not alias W.
inline void convWeightForGemm(float* Wp, const float* W, int Cout, int Cin, int k) {
  const int K = k * k * Cin, Kp = convDepth(Cin, k);
  for (int o = 0; o < Cout; ++o) {
    float* row = Wp + (size_t)o * Kp;
    for (int c = 0; c < Cin; ++c)
      for (int t = 0; t < k * k; ++t) row[(size_t)t * Cin + c] = W[((size_t)o * Cin + c) * k * k + t];
    for (int j = K; j < Kp; ++j) row[j] = 0.0f;
  }
}

// Wt [9, C] = W [C, 1, 3, 3] (torch depthwise layout), tap-major so a warp reads 32 channels of a
// tap at once. Wt must not alias W.
inline void depthwiseWeightToTaps(float* Wt, const float* W, int C) {
  for (int c = 0; c < C; ++c)
    for (int t = 0; t < 9; ++t) Wt[(size_t)t * C + c] = W[(size_t)c * 9 + t];
}

}  // namespace evit::cuda
