// The two GEMM implementations behind linear(), which dispatches between them (linear.cu).
// Host-only declarations: the test binding also calls them directly, to cover both paths.
#pragma once

#include <cstdint>

#include "device_properties.h"
#include "gemm_tiles.h"
#include "kernels.h"

namespace evit::cuda {

// Any M, N, K and any alignment; fp32 FMA. The fp32 parity path, and the fallback for
// half-precision shapes the tensor-core kernel cannot take.
template <class T>
void linearSimt(void* out, const T* x, const T* W, const float* b, int M, int N, int K, Epilogue ep, cudaStream_t s);

// Tensor cores (mma.sync m16n8k16, fp32 accumulation), T = __half or __nv_bfloat16.
// Needs K % 8 == 0 and x, W 16-byte aligned (whole cp.async chunks); see linearMmaFits.
// The tiling and splits are linearMmaPlan's.
template <class T>
void linearMma(void* out, const T* x, const T* W, const float* b, int M, int N, int K, Epilogue ep, cudaStream_t s,
               const GemmWorkspace& ws = {});

// The same with a given tiling and 1 to kMaxSplits splits (tests; splits > 1 need the workspace).
template <class T>
void linearMmaWith(MmaTiling tiling, int splits, void* out, const T* x, const T* W, const float* b, int M, int N,
                   int K, Epilogue ep, cudaStream_t s, const GemmWorkspace& ws = {});

// What linearMma launches on the current device: chooseGemmPlan, split only where the
// workspace holds splits · M · N floats.
GemmPlan linearMmaPlan(int M, int N, int K, const GemmWorkspace& ws);
GemmDevice gemmDevice(const DeviceProperties& d);

// Workspace floats for every GEMM of N outputs and depth K at up to maxRows rows on the current device.
inline size_t linearWorkspaceFloats(int maxRows, int N, int K) {
  return splitKWorkspaceFloats(maxRows, N, K, gemmDevice(deviceProperties()));
}

inline bool linearMmaFits(const void* x, const void* W, int K) {
  return K % 8 == 0 && (reinterpret_cast<uintptr_t>(x) | reinterpret_cast<uintptr_t>(W)) % 16 == 0;
}

}  // namespace evit::cuda
