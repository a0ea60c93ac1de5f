// Tensor-core attention for T = __half / __nv_bfloat16, exact softmax, fp32 scores, N queries
// against M keys (M = N for DeiT), q, k, v and out each at their own row stride:
//   - a warp owns 16 query rows; its q fragments are loaded once from global memory;
//   - keys, then values, stream through a double-buffered shared chunk of kAttnMmaKeys rows
//     (cp.async, zero-filled past M), so a load overlaps the previous chunk's math;
//   - s = scale·q·kᵀ (mma.sync, fp32 accumulation) goes to the warp's fp32 score rows in
//     shared memory: the whole row is on chip, so softmax is the plain max / exp / sum;
//   - P·V: P is read back from those rows, rounded to T pairs as the A operand, V comes
//     through ldmatrix.trans; the output accumulates in registers;
//   - no work on padding: a warp whose 16 rows all lie past N only joins the block's barriers and
//     staging, and the last chunk runs only its ceil((M − j0)/16) groups of 16 keys (the zero-filled
//     keys of the last group are masked as before: excluded from max and sum, P = 0).
// Index math (fragments, ldmatrix addresses, strides) is in tile_index.h, checked on the host.
#include <cmath>
#include <string>

#include "attention_internal.h"
#include "device_properties.h"
#include "element_type.cuh"
#include "launch.cuh"
#include "mma_ptx.cuh"
#include "shared_memory.cuh"
#include "smem_limit.cuh"
#include "softmax_row.cuh"
#include "tile_index.h"

namespace evit::cuda {

namespace {

}  // namespace

size_t attentionMmaSharedBytes(int M, int d, int warps) {
  return (size_t)2 * kAttnMmaKeys * attnKvStride(d) * 2 + (size_t)warps * 16 * attnScoreStride(M) * sizeof(float);
}

namespace {

// Groups of 16 keys in the chunk starting at key j0: 4, except in the last chunk.
__device__ __forceinline__ int keyGroups(int M, int j0) { return min(kAttnMmaKeys, M - j0 + 15) / 16; }

template <class T>
struct Pair;
template <>
struct Pair<__half> {
  using type = __half2;
  static __device__ type make(float a, float b) { return __floats2half2_rn(a, b); }
};
template <>
struct Pair<__nv_bfloat16> {
  using type = __nv_bfloat162;
  static __device__ type make(float a, float b) { return __floats2bfloat162_rn(a, b); }
};

// MAXD: the largest head dim the instance handles (64 or 128): it sizes the fragment arrays,
// which stay in registers because every loop over them is unrolled with a guard on d.
template <class T, int MAXD, bool kWithProbs>
__global__ void __launch_bounds__(128)
    attentionMmaKernel(const T* __restrict__ qp, long ldq, const T* __restrict__ kp, long ldk,
                       const T* __restrict__ vp, long ldv, T* __restrict__ out, long ldo,
                       float* __restrict__ clsProbs, int N, int M, int heads, int d, float scale) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  constexpr int MAXK = MAXD / 16;  // k16 steps over the head dim
  unsigned char* smem = dynamicShared<unsigned char>();
  const int kvStride = attnKvStride(d), sStride = attnScoreStride(M);
  T* kv = reinterpret_cast<T*>(smem);                                         // [2][keys][kvStride]
  float* scores = reinterpret_cast<float*>(kv + 2 * kAttnMmaKeys * kvStride);  // [warps·16][sStride]
  const int warps = blockDim.x / 32, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int q0 = (blockIdx.x * warps + warp) * 16;  // this warp's first query row
  const bool active = q0 < N;                        // else every row of the warp is padding
  const int h = blockIdx.y, b = blockIdx.z;
  // Row 0 of this (image, head) in each operand.
  const T* qh = qp + (long)b * N * ldq + (long)h * d;
  const T* kh = kp + (long)b * M * ldk + (long)h * d;
  const T* vh = vp + (long)b * M * ldv + (long)h * d;
  float* sw = scores + warp * 16 * sStride;

  // q fragments; rows past N are zero, so their scores are 0 and their softmax stays finite.
  uint32_t qf[MAXK][4];
#pragma unroll
  for (int kk = 0; kk < MAXK; ++kk)
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const int row = q0 + mmaFragARow(lane, q), col = kk * 16 + mmaFragACol(lane, q, 0);
      qf[kk][q] = kk * 16 < d && row < N ? *reinterpret_cast<const uint32_t*>(qh + (long)row * ldq + col) : 0u;
    }

  // Tile t < chunks is key chunk t, then value chunk t - chunks; it goes into buffer t % 2.
  const int chunks = (M + kAttnMmaKeys - 1) / kAttnMmaKeys;
  auto stage = [&](int t) {
    const T* src = t < chunks ? kh : vh;
    const long ld = t < chunks ? ldk : ldv;
    const int j0 = (t < chunks ? t : t - chunks) * kAttnMmaKeys, perRow = d / 8;
    const int rows = keyGroups(M, j0) * 16;  // keys past the last group of 16 are never read
    T* dst = kv + (t % 2) * kAttnMmaKeys * kvStride;
    for (int e = threadIdx.x; e < rows * perRow; e += blockDim.x) {
      const int key = e / perRow, ch = e % perRow;
      const bool inside = j0 + key < M;
      cpAsync16(dst + key * kvStride + ch * 8, inside ? src + (long)(j0 + key) * ld + ch * 8 : src, inside ? 16 : 0);
    }
    cpAsyncCommit();
  };

  float o[MAXD / 8][4] = {};
  stage(0);
  for (int t = 0; t < 2 * chunks; ++t) {
    cpAsyncWait<0>();
    __syncthreads();  // tile t visible to all; every warp is done with tile t - 1's buffer
    if (t + 1 < 2 * chunks) stage(t + 1);
    if (!active) continue;
    const T* tile = kv + (t % 2) * kAttnMmaKeys * kvStride;
    const int groups = keyGroups(M, (t < chunks ? t : t - chunks) * kAttnMmaKeys);
    if (t < chunks) {
      float acc[kAttnMmaKeys / 8][4] = {};
#pragma unroll
      for (int kk = 0; kk < MAXK; ++kk) {
        if (kk * 16 >= d) break;
#pragma unroll
        for (int np = 0; np < kAttnMmaKeys / 16; ++np) {
          if (np >= groups) break;
          int key, chunk;
          attnLdmatrixK(np, kk, lane, key, chunk);
          uint32_t r[4];
          ldmatrixX4(r, tile + key * kvStride + chunk * 8);
          mma16816<T>(acc[2 * np], qf[kk], r[0], r[1]);
          mma16816<T>(acc[2 * np + 1], qf[kk], r[2], r[3]);
        }
      }
#pragma unroll
      for (int ni = 0; ni < kAttnMmaKeys / 8; ++ni) {
        if (ni >= 2 * groups) break;
#pragma unroll
        for (int hh = 0; hh < 2; ++hh) {
          const int row = mmaAccRow(lane, 2 * hh), col = t * kAttnMmaKeys + ni * 8 + mmaAccCol(lane, 0);
          *reinterpret_cast<float2*>(sw + row * sStride + col) =
              make_float2(scale * acc[ni][2 * hh], scale * acc[ni][2 * hh + 1]);
        }
      }
      continue;
    }
    if (t == chunks) {
      // Exact softmax of the warp's 16 rows, whole rows in fp32; columns M.. up to the last
      // group of 16 keys become 0 for P·V.
      __syncwarp();
      const int padded = (M + 15) / 16 * 16;
      for (int r = 0; r < 16; ++r) {
        float* probsOut = kWithProbs && q0 + r == 0 ? clsProbs + ((long)b * heads + h) * M : nullptr;
        warpSoftmaxRow(sw + r * sStride, M, padded, probsOut, lane);
      }
      __syncwarp();
    }
    const int j0 = (t - chunks) * kAttnMmaKeys;
#pragma unroll
    for (int ks = 0; ks < kAttnMmaKeys / 16; ++ks) {
      if (ks >= groups) break;
      uint32_t pa[4];
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const float2 v =
            *reinterpret_cast<const float2*>(sw + mmaFragARow(lane, q) * sStride + j0 + ks * 16 + mmaFragACol(lane, q, 0));
        pa[q] = packPair<T>(v.x, v.y);
      }
#pragma unroll
      for (int np = 0; np < MAXD / 16; ++np) {
        if (np * 16 >= d) break;
        int key, chunk;
        attnLdmatrixV(np, ks, lane, key, chunk);
        uint32_t r[4];
        ldmatrixX4Trans(r, tile + key * kvStride + chunk * 8);
        mma16816<T>(o[2 * np], pa, r[0], r[1]);
        mma16816<T>(o[2 * np + 1], pa, r[2], r[3]);
      }
    }
  }

#pragma unroll
  for (int ni = 0; ni < MAXD / 8; ++ni) {
    if (ni * 8 >= d) break;
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      const int row = q0 + mmaAccRow(lane, 2 * hh), col = ni * 8 + mmaAccCol(lane, 0);
      if (row < N)
        *reinterpret_cast<typename Pair<T>::type*>(out + ((long)b * N + row) * ldo + (long)h * d + col) =
            Pair<T>::make(o[ni][2 * hh], o[ni][2 * hh + 1]);
    }
  }
#endif
}

template <class T, int MAXD>
void launch(T* out, long ldo, float* clsProbs, const T* q, long ldq, const T* k, long ldk, const T* v, long ldv, int B,
            int N, int M, int heads, int d, cudaStream_t s) {
  // As many warps (16 query rows each) per block as the score rows allow: 4, else 2, else 1.
  const int optin = deviceProperties().sharedPerBlockOptin;
  int warps = 4;
  while (warps > 1 && attentionMmaSharedBytes(M, d, warps) > (size_t)optin) warps /= 2;
  const size_t bytes = attentionMmaSharedBytes(M, d, warps);
  const dim3 grid(ceilDiv(N, 16 * warps), heads, B);
  const float scale = 1.0f / std::sqrt((float)d);
  if (clsProbs) {
    reserveSharedMemory(attentionMmaKernel<T, MAXD, true>, bytes, "attention (tensor cores)");
    launchKernel("attention (tensor cores)", attentionMmaKernel<T, MAXD, true>, grid, 32 * warps, bytes, s, q, ldq, k,
                 ldk, v, ldv, out, ldo, clsProbs, N, M, heads, d, scale);
  } else {
    reserveSharedMemory(attentionMmaKernel<T, MAXD, false>, bytes, "attention (tensor cores)");
    launchKernel("attention (tensor cores)", attentionMmaKernel<T, MAXD, false>, grid, 32 * warps, bytes, s, q, ldq, k,
                 ldk, v, ldv, out, ldo, nullptr, N, M, heads, d, scale);
  }
}

}  // namespace

template <class T>
void attentionMma(T* out, long ldo, float* clsProbs, const T* q, long ldq, const T* k, long ldk, const T* v, long ldv,
                  int B, int N, int M, int heads, int headDim, cudaStream_t s) {
  if (!attentionMmaFits(out, ldo, q, ldq, k, ldk, v, ldv, headDim))
    throw CudaError("attention (tensor cores): needs headDim % 16 == 0, headDim <= 128, 16-byte aligned k and v rows, "
                    "4-byte aligned q and out rows (headDim=" + std::to_string(headDim) + ")");
  if (N < 1 || M < 1 || B > 65535 || heads > 65535)
    throw CudaError("attention (tensor cores): need N >= 1, M >= 1, B and heads at most 65535");
  if (B <= 0) return;
  if (headDim <= 64)
    launch<T, 64>(out, ldo, clsProbs, q, ldq, k, ldk, v, ldv, B, N, M, heads, headDim, s);
  else
    launch<T, 128>(out, ldo, clsProbs, q, ldq, k, ldk, v, ldv, B, N, M, heads, headDim, s);
}

template void attentionMma<__half>(__half*, long, float*, const __half*, long, const __half*, long, const __half*, long,
                                   int, int, int, int, int, cudaStream_t);
template void attentionMma<__nv_bfloat16>(__nv_bfloat16*, long, float*, const __nv_bfloat16*, long,
                                          const __nv_bfloat16*, long, const __nv_bfloat16*, long, int, int, int, int,
                                          int, cudaStream_t);

}  // namespace evit::cuda
