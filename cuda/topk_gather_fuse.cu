// Token reorganisation of one dropping block in two launches, so that the data movement and the
// fused token spread over the whole GPU instead of one block per image:
//   topkRank   (one block per image, threads sized to the network):
//              s[j] = head mean of the class-token probabilities (fixed head order, device_math.h),
//              rank keys sorted descending by a bitonic network in shared memory (topk_order.h);
//              writes the scores s [B, M] and every token index by rank, order [B, M] (the first
//              k are the kept tokens, ties to the lower index; the rest, the dropped ones, follow
//              in rank order), and the origins of the new tokens;
//   gatherFuse (grid: row tiles + fused-channel tiles, × images):
//              y = [x[0], x[1 + order[0..k)]…, Σ_{r ≥ k} s[order[r]]·x[1 + order[r]]].
// The fused sum runs in a fixed order: lane group g (0..7) sums ranks k + g, k + g + 8, … in rank
// order, then a fixed tree adds the groups (g + 4, then g + 2, then g + 1 into g). Every output
// element is written by exactly one thread; there are no atomics, so results are deterministic.
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

constexpr int kRankMaxThreads = 512;
constexpr int kGatherThreads = 256;
constexpr int kRowsPerTile = 8;                                 // output rows a copy block moves
constexpr int kFuseChannels = 32;                               // channels of a fused block: one per lane
constexpr int kFuseGroups = kGatherThreads / kFuseChannels;     // 8 warps, each a stride of dropped ranks

// One compare-exchange per thread per network step: n / 2 threads, whole warps, capped.
int rankThreads(int n) { return n / 2 < 32 ? 32 : n / 2 > kRankMaxThreads ? kRankMaxThreads : n / 2; }

// Why: the ranking needs the whole row of scores in one block; it is short (log² n barriers), and
// everything that scales with C moves to gatherFuse.
__global__ void topkRankKernel(int32_t* __restrict__ order, float* __restrict__ scores,
                               int32_t* __restrict__ originsOut, const float* __restrict__ clsProbs,
                               const int32_t* __restrict__ originsIn, int N, int heads, int k, bool fuse,
                               int32_t fusedOrigin) {
  uint64_t* keys = dynamicShared<uint64_t>();
  const int M = N - 1, n = bitonicSize(M), b = blockIdx.x, tid = threadIdx.x, threads = blockDim.x;
  const int outTokens = k + (fuse ? 1 : 0);
  // Column 0 of each probability row is the class token itself.
  const float* probs = clsProbs + (long)b * heads * N + 1;
  for (int j = tid; j < n; j += threads) {
    if (j < M) {
      const float s = headMean(probs + j, N, heads);
      scores[(long)b * M + j] = s;
      keys[j] = rankKey(s, j);
    } else {
      keys[j] = kPadKey;
    }
  }
  __syncthreads();
  for (int size = 2; size <= n; size <<= 1)
    for (int stride = size / 2; stride > 0; stride >>= 1) {
      for (int p = tid; p < n / 2; p += threads) bitonicCompareExchange(keys, p, size, stride);
      __syncthreads();
    }
  for (int r = tid; r < M; r += threads) {
    const int j = keyIndex(keys[r]);
    order[(long)b * M + r] = j;
    if (originsOut && r < k) originsOut[(long)b * outTokens + r] = originsIn ? originsIn[(long)b * M + j] : j;
  }
  if (tid == 0 && fuse && originsOut) originsOut[(long)b * outTokens + k] = fusedOrigin;
}

// Copy block: output rows [8·tile, 8·tile + 8) of image b (row 0 the class token, row 1 + i the
// i-th kept token), 16 bytes at a time when C and the pointers allow it.
__device__ void copyRows(float* __restrict__ yb, const float* __restrict__ xb, const int32_t* __restrict__ ob,
                         int tile, int rows, int C, bool vec4) {
  const int r0 = tile * kRowsPerTile, nr = min(kRowsPerTile, rows - r0);
  const int width = vec4 ? C / 4 : C;
  for (int e = threadIdx.x; e < nr * width; e += kGatherThreads) {
    const int row = r0 + e / width, c = e % width;
    const int src = row == 0 ? 0 : 1 + ob[row - 1];
    if (vec4)
      reinterpret_cast<float4*>(yb + (long)row * C)[c] = reinterpret_cast<const float4*>(xb + (long)src * C)[c];
    else
      yb[(long)row * C + c] = xb[(long)src * C + c];
  }
}

// Fused block: channels [32·tile, 32·tile + 32) of the fused row; lane = channel, warp g = the
// dropped ranks k + g + 8·i, summed in rank order; then the fixed tree over the 8 warps.
__device__ void fuseChannels(float* __restrict__ yf, const float* __restrict__ xb, const int32_t* __restrict__ ob,
                             const float* __restrict__ sb, int tile, int M, int k, int C) {
  float* part = dynamicShared<float>();  // [kFuseGroups][kFuseChannels]
  const int lane = threadIdx.x % kFuseChannels, g = threadIdx.x / kFuseChannels;
  const int c = tile * kFuseChannels + lane;
  float acc = 0.0f;
  if (c < C)
    for (int r = k + g; r < M; r += kFuseGroups) {
      const int j = ob[r];
      acc += sb[j] * xb[(long)(1 + j) * C + c];
    }
  part[g * kFuseChannels + lane] = acc;
  __syncthreads();
  for (int step = kFuseGroups / 2; step > 0; step >>= 1) {
    if (g < step) part[g * kFuseChannels + lane] += part[(g + step) * kFuseChannels + lane];
    __syncthreads();
  }
  if (g == 0 && c < C) yf[c] = part[lane];
}

// Why: one block per (image, tile) puts B · (row tiles + channel tiles) blocks on the GPU, so the
// copy and the fusion take the same few microseconds at batch 1 as at batch 64.
__global__ void __launch_bounds__(kGatherThreads)
    gatherFuseKernel(float* __restrict__ y, const float* __restrict__ x, const int32_t* __restrict__ order,
                     const float* __restrict__ scores, int N, int C, int k, bool fuse, int rowTiles, bool vec4) {
  const int b = blockIdx.y, tile = blockIdx.x, M = N - 1;
  const int outN = 1 + k + (fuse ? 1 : 0);
  const float* xb = x + (long)b * N * C;
  float* yb = y + (long)b * outN * C;
  const int32_t* ob = order + (long)b * M;
  if (tile < rowTiles)
    copyRows(yb, xb, ob, tile, 1 + k, C, vec4);
  else
    fuseChannels(yb + (long)(1 + k) * C, xb, ob, scores + (long)b * M, tile - rowTiles, M, k, C);
}

}  // namespace

void topkGatherFuse(float* out, int32_t* originsOut, int32_t* orderScratch, float* scoreScratch, const float* x,
                    const float* clsProbs, const int32_t* originsIn, int B, int N, int heads, int C, int k, bool fuse,
                    int32_t fusedOrigin, cudaStream_t s) {
  if (N < 2 || k < 1 || k > N - 1 || heads < 1 || C < 1)
    throw CudaError("topkGatherFuse: need N >= 2, 1 <= k <= N-1, heads >= 1, C >= 1 (got N=" + std::to_string(N) +
                    ", k=" + std::to_string(k) + ", heads=" + std::to_string(heads) + ", C=" + std::to_string(C) + ")");
  if (B > 65535) throw CudaError("topkGatherFuse: B must be at most 65535 (got " + std::to_string(B) + ")");
  if (B <= 0) return;
  if (!orderScratch || !scoreScratch) throw CudaError("topkGatherFuse: the order and score scratch buffers are required");
  const int M = N - 1, n = bitonicSize(M);
  const size_t keyBytes = (size_t)n * sizeof(uint64_t);
  reserveSharedMemory(topkRankKernel, keyBytes, "topkGatherFuse (rank)");
  launchKernel("topkGatherFuse (rank)", topkRankKernel, B, rankThreads(n), keyBytes, s, orderScratch, scoreScratch,
               originsOut, clsProbs, originsIn, N, heads, k, fuse, fusedOrigin);
  const bool vec4 = C % 4 == 0 && (reinterpret_cast<uintptr_t>(x) | reinterpret_cast<uintptr_t>(out)) % 16 == 0;
  const int rowTiles = ceilDiv(1 + k, kRowsPerTile), fuseTiles = fuse ? ceilDiv(C, kFuseChannels) : 0;
  const size_t partBytes = fuse ? (size_t)kGatherThreads * sizeof(float) : 0;
  launchKernel("topkGatherFuse (gather)", gatherFuseKernel, dim3(rowTiles + fuseTiles, B), kGatherThreads, partBytes, s,
               out, x, orderScratch, scoreScratch, N, C, k, fuse, rowTiles, vec4);
}

}  // namespace evit::cuda
