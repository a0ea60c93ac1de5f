// Token reorganisation of one dropping block in one launch, one block per image:
//   1. s[j] = head mean of the class-token probabilities (fixed head order, device_math.h);
//   2. rank keys sorted descending by a bitonic network in shared memory (topk_order.h):
//      the first k keys are the kept tokens, by score, ties to the lower index;
//   3. y = [x[0], x[1 + idx]…, Σ_{j∉idx} s[j]·x[1 + j]] and the origins of the new tokens.
// Every output element is written by exactly one thread and every sum runs in a fixed
// order, so results are deterministic; there are no atomics.
#include <string>

#include "device_math.h"
#include "element_type.cuh"
#include "kernels.h"
#include "launch.cuh"
#include "shared_memory.cuh"
#include "smem_limit.cuh"
#include "topk_order.h"

namespace evit::cuda {

namespace {

constexpr int kThreads = 256;

// Shared memory: n sort keys, then M scores, then M "dropped" flags.
size_t sharedBytes(int M) { return (size_t)bitonicSize(M) * sizeof(uint64_t) + (size_t)M * (sizeof(float) + 1); }

__global__ void topkGatherFuseKernel(const float* __restrict__ x, const float* __restrict__ clsProbs,
                                     float* __restrict__ y, const int32_t* __restrict__ originsIn,
                                     int32_t* __restrict__ originsOut, int N, int heads, int C, int k, bool fuse,
                                     int32_t fusedOrigin, bool vec4) {
  unsigned char* smem = dynamicShared<unsigned char>();
  const int M = N - 1, n = bitonicSize(M);
  uint64_t* keys = reinterpret_cast<uint64_t*>(smem);
  float* score = reinterpret_cast<float*>(keys + n);
  unsigned char* dropped = reinterpret_cast<unsigned char*>(score + M);
  const int b = blockIdx.x, tid = threadIdx.x;
  const int outN = 1 + k + (fuse ? 1 : 0), outTokens = outN - 1;

  // 1. Scores and keys; column 0 of each probability row is the class token itself.
  const float* probs = clsProbs + (long)b * heads * N + 1;
  for (int j = tid; j < n; j += kThreads) {
    if (j < M) {
      score[j] = headMean(probs + j, N, heads);
      keys[j] = rankKey(score[j], j);
      dropped[j] = 1;
    } else {
      keys[j] = kPadKey;
    }
  }
  __syncthreads();

  // 2. Sort, one compare-exchange per thread and pair, a barrier per network step.
  for (int size = 2; size <= n; size <<= 1)
    for (int stride = size / 2; stride > 0; stride >>= 1) {
      for (int p = tid; p < n / 2; p += kThreads) bitonicCompareExchange(keys, p, size, stride);
      __syncthreads();
    }
  for (int i = tid; i < k; i += kThreads) {
    const int j = keyIndex(keys[i]);
    dropped[j] = 0;
    if (originsOut) originsOut[(long)b * outTokens + i] = originsIn ? originsIn[(long)b * M + j] : j;
  }
  if (tid == 0 && fuse && originsOut) originsOut[(long)b * outTokens + k] = fusedOrigin;
  __syncthreads();

  // 3a. Class token and kept rows, 16 bytes at a time when C and the pointers allow it.
  const float* xb = x + (long)b * N * C;
  float* yb = y + (long)b * outN * C;
  if (vec4) {
    const int C4 = C / 4;
    for (long e = tid; e < (long)(1 + k) * C4; e += kThreads) {
      const int row = (int)(e / C4), c4 = (int)(e % C4);
      const int src = row == 0 ? 0 : 1 + keyIndex(keys[row - 1]);
      reinterpret_cast<float4*>(yb + (long)row * C)[c4] = reinterpret_cast<const float4*>(xb + (long)src * C)[c4];
    }
  } else {
    for (long e = tid; e < (long)(1 + k) * C; e += kThreads) {
      const int row = (int)(e / C), c = (int)(e % C);
      const int src = row == 0 ? 0 : 1 + keyIndex(keys[row - 1]);
      yb[(long)row * C + c] = xb[(long)src * C + c];
    }
  }

  // 3b. Fused token: one thread per channel, dropped tokens in index order, raw scores.
  if (!fuse) return;
  for (int c = tid; c < C; c += kThreads) {
    float acc = 0.0f;
    for (int j = 0; j < M; ++j)
      if (dropped[j]) acc += score[j] * xb[(long)(1 + j) * C + c];
    yb[(long)(1 + k) * C + c] = acc;
  }
}

}  // namespace

void topkGatherFuse(float* out, int32_t* originsOut, const float* x, const float* clsProbs, const int32_t* originsIn,
                    int B, int N, int heads, int C, int k, bool fuse, int32_t fusedOrigin, cudaStream_t s) {
  if (N < 2 || k < 1 || k > N - 1 || heads < 1 || C < 1)
    throw CudaError("topkGatherFuse: need N >= 2, 1 <= k <= N-1, heads >= 1, C >= 1 (got N=" + std::to_string(N) +
                    ", k=" + std::to_string(k) + ", heads=" + std::to_string(heads) + ", C=" + std::to_string(C) + ")");
  if (B <= 0) return;
  const bool vec4 = C % 4 == 0 && (reinterpret_cast<uintptr_t>(x) | reinterpret_cast<uintptr_t>(out)) % 16 == 0;
  const size_t bytes = sharedBytes(N - 1);
  reserveSharedMemory(topkGatherFuseKernel, bytes, "topkGatherFuse");
  launchKernel("topkGatherFuse", topkGatherFuseKernel, B, kThreads, bytes, s, x, clsProbs, out, originsIn, originsOut, N, heads,
               C, k, fuse, fusedOrigin, vec4);
}

}  // namespace evit::cuda
