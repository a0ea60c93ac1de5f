// The two attention implementations behind attention(), which picks one (attention.cu).
// Host-only declarations: the test binding also calls them directly, to cover both paths.
#pragma once

#include <cstdint>

#include "kernels.h"

namespace evit::cuda {

// fp32 FMA, any T, any headDim up to 128 (attention.cu).
template <class T>
void attentionSimt(T* out, float* clsProbs, const T* qkv, int B, int N, int heads, int headDim, cudaStream_t s);

// Tensor cores for T = __half / __nv_bfloat16 (attention_mma.cu); see attentionMmaFits.
template <class T>
void attentionMma(T* out, float* clsProbs, const T* qkv, int B, int N, int heads, int headDim, cudaStream_t s);

// headDim a multiple of 16 up to 128 (whole k16 steps), qkv 16-byte aligned (cp.async rows),
// out 4-byte aligned (paired stores).
inline bool attentionMmaFits(const void* qkv, const void* out, int headDim) {
  return headDim % 16 == 0 && headDim <= 128 && reinterpret_cast<uintptr_t>(qkv) % 16 == 0 &&
         reinterpret_cast<uintptr_t>(out) % 4 == 0;
}

}  // namespace evit::cuda
