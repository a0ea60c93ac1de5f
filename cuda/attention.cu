// attention() and groupAttention(): the tensor-core kernel (attention_mma.cu) for half
// precision when the head dim and the operands' alignment allow, else the SIMT kernel below,
// which handles fp32 and any head dim up to 128.
//
// SIMT attention of N queries against M keys (M = N for DeiT) with an exact softmax: a block
// owns kAttnRows query rows of one (image, head) and keeps their whole score rows (M keys) in
// shared memory, so softmax is the plain max / exp / sum in fp32 over the full row (no online
// rescaling). Keys, then values, pass through shared memory in chunks of kAttnKeys, converted
// to fp32 once on load; all arithmetic is fp32 FMA, whatever T is. q, k, v and out each have
// their own row stride, so a caller can point them into one qkv tensor (DeiT) or at channel
// slices of separate tensors (a head group of shunted attention).
//
//   pass 1  s[r][j] = scale · Σ_c q[r][c]·k[j][c]   (scale after the dot, as the CPU op)
//   pass 2  p[r][:] = softmax(s[r][:]); the block holding query row 0 writes p[0][:]
//   pass 3  out[r][c] = Σ_j p[r][j]·v[j][c]
//
// Shared memory: kAttnRows·d (q) + kAttnKeys·(d+1) (k or v chunk, rows padded so a warp
// reading one column of 32 keys hits 32 banks) + kAttnRows·M (scores) floats.
#include <cmath>
#include <string>
#include <type_traits>

#include "attention_internal.h"
#include "element_type.cuh"
#include "kernels.h"
#include "launch.cuh"
#include "shared_memory.cuh"
#include "smem_limit.cuh"
#include "softmax_row.cuh"
#include "tile_index.h"

namespace evit::cuda {

namespace {

constexpr int kMaxHeadDim = 128;
constexpr int kMaxOutPerThread = kAttnRows * kMaxHeadDim / kAttnThreads;

}  // namespace

size_t attentionSimtSharedBytes(int M, int d) {
  return ((size_t)kAttnRows * d + (size_t)kAttnKeys * (d + 1) + (size_t)kAttnRows * M) * sizeof(float);
}

namespace {

// Rows [j0, j0 + rows) of one operand of the head (base points at its row 0) into dst[rows][ld]
// as fp32, zero past `limit` rows.
template <class T>
__device__ void stageRows(const T* __restrict__ base, long ldRow, int limit, int j0, int rows, int d, float* dst,
                          int ld) {
  for (int e = threadIdx.x; e < rows * d; e += kAttnThreads) {
    const int j = e / d, c = e % d;
    dst[j * ld + c] = j0 + j < limit ? toFloat(base[(long)(j0 + j) * ldRow + c]) : 0.0f;
  }
}

template <class T, bool kWithProbs>
__global__ void __launch_bounds__(kAttnThreads)
    attentionKernel(const T* __restrict__ qp, long ldq, const T* __restrict__ kp, long ldk, const T* __restrict__ vp,
                    long ldv, T* __restrict__ out, long ldo, float* __restrict__ clsProbs, int N, int M, int heads,
                    int d, float scale) {
  float* q = dynamicShared<float>();                             // [kAttnRows][d]
  float* kv = q + kAttnRows * d;                 // [kAttnKeys][d + 1]
  float* s = kv + kAttnKeys * (d + 1);           // [kAttnRows][M]
  const int q0 = blockIdx.x * kAttnRows, h = blockIdx.y, b = blockIdx.z;
  const int tid = threadIdx.x;
  // Row 0 of this (image, head) in each operand.
  const T* qh = qp + (long)b * N * ldq + (long)h * d;
  const T* kh = kp + (long)b * M * ldk + (long)h * d;
  const T* vh = vp + (long)b * M * ldv + (long)h * d;

  stageRows(qh, ldq, N, q0, kAttnRows, d, q, d);

  // Pass 1: scores, a chunk of keys at a time; thread = one key, kAttnRowsPerThread rows.
  for (int j0 = 0; j0 < M; j0 += kAttnKeys) {
    __syncthreads();  // the previous chunk (or nothing) is done with kv
    stageRows(kh, ldk, M, j0, kAttnKeys, d, kv, d + 1);
    __syncthreads();
    int r0, j;
    attnScoreCoord(tid, 0, r0, j);
    if (j0 + j >= M) continue;  // a zero-filled key past M: nothing to score; the next barrier is the loop's
    float acc[kAttnRowsPerThread] = {};
    const float* kj = kv + j * (d + 1);
    for (int c = 0; c < d; ++c) {
      const float kc = kj[c];
#pragma unroll
      for (int i = 0; i < kAttnRowsPerThread; ++i) acc[i] += q[(r0 + i) * d + c] * kc;
    }
#pragma unroll
    for (int i = 0; i < kAttnRowsPerThread; ++i) s[(r0 + i) * M + j0 + j] = scale * acc[i];
  }
  __syncthreads();

  // Pass 2: exact softmax, one warp per row, fp32 throughout.
  const int warp = tid / 32, lane = tid % 32;
  for (int r = warp; r < kAttnRows && q0 + r < N; r += kAttnThreads / 32) {
    float* probsOut = kWithProbs && q0 + r == 0 ? clsProbs + ((long)b * heads + h) * M : nullptr;
    warpSoftmaxRow(s + r * M, M, M, probsOut, lane);
  }

  // Pass 3: out = P·V, values staged like the keys; thread = a fixed set of (row, channel).
  const int perThread = attnOutPerThread(d);
  float acc[kMaxOutPerThread] = {};
  for (int j0 = 0; j0 < M; j0 += kAttnKeys) {
    __syncthreads();  // scores final / previous chunk consumed
    stageRows(vh, ldv, M, j0, kAttnKeys, d, kv, d + 1);
    __syncthreads();
    const int keys = min(kAttnKeys, M - j0);
#pragma unroll
    for (int e = 0; e < kMaxOutPerThread; ++e) {
      int r, c;
      attnOutCoord(tid, e, d, r, c);
      if (e >= perThread || r >= kAttnRows || q0 + r >= N) continue;
      const float* sr = s + r * M + j0;
      float a = acc[e];
      for (int j = 0; j < keys; ++j) a += sr[j] * kv[j * (d + 1) + c];
      acc[e] = a;
    }
  }
#pragma unroll
  for (int e = 0; e < kMaxOutPerThread; ++e) {
    int r, c;
    attnOutCoord(tid, e, d, r, c);
    if (e >= perThread || r >= kAttnRows || q0 + r >= N) continue;
    out[((long)b * N + q0 + r) * ldo + (long)h * d + c] = fromFloat<T>(acc[e]);
  }
}

}  // namespace

template <class T>
void attentionSimt(T* out, long ldo, float* clsProbs, const T* q, long ldq, const T* k, long ldk, const T* v, long ldv,
                   int B, int N, int M, int heads, int headDim, cudaStream_t s) {
  if (N < 1 || M < 1 || heads < 1 || headDim < 1 || headDim > kMaxHeadDim)
    throw CudaError("attention: need N >= 1, M >= 1, heads >= 1 and 1 <= headDim <= " + std::to_string(kMaxHeadDim) +
                    " (got N=" + std::to_string(N) + ", M=" + std::to_string(M) + ", heads=" + std::to_string(heads) +
                    ", headDim=" + std::to_string(headDim) + ")");
  if (B <= 0) return;
  if (B > 65535 || heads > 65535) throw CudaError("attention: B and heads must be at most 65535");
  const size_t bytes = attentionSimtSharedBytes(M, headDim);
  const dim3 grid(ceilDiv(N, kAttnRows), heads, B);
  const float scale = 1.0f / std::sqrt((float)headDim);
  if (clsProbs) {
    reserveSharedMemory(attentionKernel<T, true>, bytes, "attention (SIMT)");
    launchKernel("attention (SIMT)", attentionKernel<T, true>, grid, kAttnThreads, bytes, s, q, ldq, k, ldk, v, ldv,
                 out, ldo, clsProbs, N, M, heads, headDim, scale);
  } else {
    reserveSharedMemory(attentionKernel<T, false>, bytes, "attention (SIMT)");
    launchKernel("attention (SIMT)", attentionKernel<T, false>, grid, kAttnThreads, bytes, s, q, ldq, k, ldk, v, ldv,
                 out, ldo, nullptr, N, M, heads, headDim, scale);
  }
}

template <class T>
void groupAttention(T* out, long ldo, float* clsProbs, const T* q, long ldq, const T* k, long ldk, const T* v,
                    long ldv, int B, int N, int M, int heads, int headDim, cudaStream_t s) {
  if constexpr (!std::is_same_v<T, float>) {
    if (attentionMmaFits(out, ldo, q, ldq, k, ldk, v, ldv, headDim))
      return attentionMma(out, ldo, clsProbs, q, ldq, k, ldk, v, ldv, B, N, M, heads, headDim, s);
  }
  attentionSimt(out, ldo, clsProbs, q, ldq, k, ldk, v, ldv, B, N, M, heads, headDim, s);
}

template <class T>
void attention(T* out, float* clsProbs, const T* qkv, int B, int N, int heads, int headDim, cudaStream_t s) {
  if (N < 2) throw CudaError("attention: need N >= 2 (got N=" + std::to_string(N) + ")");
  const long C = (long)heads * headDim, ld = 3 * C;
  groupAttention(out, C, clsProbs, qkv, ld, qkv + C, ld, qkv + 2 * C, ld, B, N, N, heads, headDim, s);
}

#define EVIT_ATTENTION_INSTANCES(T)                                                                                  \
  template void attentionSimt<T>(T*, long, float*, const T*, long, const T*, long, const T*, long, int, int, int, int, \
                                 int, cudaStream_t);                                                                 \
  template void groupAttention<T>(T*, long, float*, const T*, long, const T*, long, const T*, long, int, int, int,    \
                                  int, int, cudaStream_t);                                                           \
  template void attention<T>(T*, float*, const T*, int, int, int, int, cudaStream_t);
EVIT_ATTENTION_INSTANCES(float)
EVIT_ATTENTION_INSTANCES(__half)
EVIT_ATTENTION_INSTANCES(__nv_bfloat16)
#undef EVIT_ATTENTION_INSTANCES

}  // namespace evit::cuda
