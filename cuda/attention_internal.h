// The two attention implementations behind attention() and groupAttention(), which pick one
// (attention.cu). Host-only declarations: the test binding also calls them directly, to cover
// both paths. Operands as groupAttention's (kernels.h): head h of image b reads q row i at
// q + (b·N + i)·ldq + h·headDim, k and v row j at k + (b·M + j)·ldk + h·headDim (v with ldv),
// and writes out row i at out + (b·N + i)·ldo + h·headDim.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels.h"

namespace evit::cuda {

// fp32 FMA, any T, any headDim up to 128 (attention.cu).
template <class T>
void attentionSimt(T* out, long ldo, float* clsProbs, const T* q, long ldq, const T* k, long ldk, const T* v, long ldv,
                   int B, int N, int M, int heads, int headDim, cudaStream_t s);

// Tensor cores for T = __half / __nv_bfloat16 (attention_mma.cu); see attentionMmaFits.
template <class T>
void attentionMma(T* out, long ldo, float* clsProbs, const T* q, long ldq, const T* k, long ldk, const T* v, long ldv,
                  int B, int N, int M, int heads, int headDim, cudaStream_t s);

// headDim a multiple of 16 up to 128 (whole k16 steps); k and v rows 16-byte aligned (cp.async
// rows; T is 2 bytes, so the strides are multiples of 8); q and out rows 4-byte aligned (paired
// loads and stores).
inline bool attentionMmaFits(const void* out, long ldo, const void* q, long ldq, const void* k, long ldk,
                             const void* v, long ldv, int headDim) {
  auto at = [](const void* p) { return reinterpret_cast<uintptr_t>(p); };
  return headDim % 16 == 0 && headDim <= 128 && (at(k) | at(v)) % 16 == 0 && ldk % 8 == 0 && ldv % 8 == 0 &&
         (at(q) | at(out)) % 4 == 0 && ldq % 2 == 0 && ldo % 2 == 0;
}

// Dynamic shared memory of one block for M keys: the SIMT kernel (kAttnRows query rows), and the
// tensor-core kernel with `warps` warps of 16 query rows.
size_t attentionSimtSharedBytes(int M, int headDim);
size_t attentionMmaSharedBytes(int M, int headDim, int warps);

// DeiT's form of both (q | k | v inside qkv [B, N, 3C], M = N, out [B, N, C]), as attention().
template <class T>
void attentionSimt(T* out, float* clsProbs, const T* qkv, int B, int N, int heads, int headDim, cudaStream_t s) {
  const long C = (long)heads * headDim, ld = 3 * C;
  attentionSimt(out, C, clsProbs, qkv, ld, qkv + C, ld, qkv + 2 * C, ld, B, N, N, heads, headDim, s);
}
template <class T>
void attentionMma(T* out, float* clsProbs, const T* qkv, int B, int N, int heads, int headDim, cudaStream_t s) {
  const long C = (long)heads * headDim, ld = 3 * C;
  attentionMma(out, C, clsProbs, qkv, ld, qkv + C, ld, qkv + 2 * C, ld, B, N, N, heads, headDim, s);
}

}  // namespace evit::cuda
