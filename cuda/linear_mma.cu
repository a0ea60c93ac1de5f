// Tensor-core GEMM for T = __half / __nv_bfloat16 on sm_80 and newer: out = epilogue(x·Wᵀ + b).
// A block computes a BM × BN tile with WM × WN warps (tile_index.h has all index math):
//   - k-slices of kMmaBK = 32 halves of x and W stream into a STAGES-deep ring of shared
//     buffers with cp.async (zero-filled past M, N and K, so edge tiles need no branches);
//   - tile rows are XOR-swizzled 16-byte chunks, so ldmatrix.x4 reads are bank-conflict free;
//   - mma.sync.m16n8k16 (row.col: x and W are both K-contiguous, exactly mma's A and B
//     layouts, no transposes) accumulates in fp32 registers;
//   - the epilogue (bias, GELU, residual) is applied to the registers and stored directly.
// Three tile shapes, 128 × 128 (8 warps), 128 × 64 and 64 × 64 (4 warps), chosen per launch by
// the wave rule of gemm_tiles.h; where the tiles are fewer than the SMs and K is long, the K
// range is split over gridDim.z blocks that write fp32 partial sums to a workspace, and
// splitKReduceKernel adds them in split order, then the bias and the epilogue (no atomics: the
// result is the same on every run).
#include <string>

#include "device_properties.h"
#include "gemm_tiles.h"
#include "linear_epilogue.cuh"
#include "linear_internal.h"
#include "launch.cuh"
#include "mma_ptx.cuh"
#include "shared_memory.cuh"
#include "smem_limit.cuh"
#include "tile_index.h"

namespace evit::cuda {

namespace {

constexpr int kStages = kMmaStages;

// Resident blocks per SM each tiling is compiled for (the register budget ptxas must meet),
// the slots gemm_tiles.h counts on: 128 × 128 two (128 registers), 128 × 64 five (96), 64 × 64 six (80).
constexpr int mmaMinBlocks(int BM, int BN) { return BM == 128 && BN == 128 ? 2 : BM == 128 ? 5 : 6; }

// Rows [r0, r0 + ROWS) × k-slice kt of a K-contiguous matrix with `limit` rows into a swizzled tile.
template <int ROWS, int THREADS, class T>
__device__ __forceinline__ void loadTile(T* tile, const T* __restrict__ g, int r0, int limit, int K, int kt) {
  static_assert(ROWS * kMmaChunks % THREADS == 0, "every thread copies the same number of chunks");
#pragma unroll
  for (int i = 0; i < ROWS * kMmaChunks / THREADS; ++i) {
    int row, chunk;
    mmaLoadCoord(threadIdx.x, i, THREADS, row, chunk);
    const int gr = r0 + row, gk = kt * kMmaBK + chunk * 8;
    const bool inside = gr < limit && gk < K;  // K % 8 == 0: a chunk is wholly inside or outside
    cpAsync16(tile + mmaSmemOffset(row, chunk), inside ? g + (long)gr * K + gk : g, inside ? 16 : 0);
  }
}

template <class T, int BM, int BN, int WM, int WN>
__global__ void __launch_bounds__(32 * WM * WN, mmaMinBlocks(BM, BN))
    linearMmaKernel(const T* __restrict__ x, const T* __restrict__ W, const float* __restrict__ b, void* out, int M,
                    int N, int K, int splitTiles, Epilogue ep, bool pairedStores) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  constexpr int THREADS = 32 * WM * WN, MI = BM / WM / 16, NI = BN / WN / 8;
  static_assert(MI >= 1 && NI % 2 == 0, "a warp tile is whole m16 fragments and pairs of n8 fragments");
  constexpr MmaShape shape{BM, BN, WM, WN};
  T* xs = dynamicShared<T>();  // [kStages][BM][kMmaBK]
  T* ws = xs + kStages * BM * kMmaBK;   // [kStages][BN][kMmaBK]
  const int bm = blockIdx.x, bn = blockIdx.y, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  // Split z of gridDim.z takes k-slices kt0 .. kt0 + kTiles - 1 and writes its own [M, N] slice.
  int kt0, kTiles;
  mmaSplitRange(K, splitTiles, blockIdx.z, kt0, kTiles);
  if (gridDim.z > 1) out = static_cast<float*>(out) + (long)blockIdx.z * M * N;

  float acc[MI][NI][4] = {};
  // Prologue: kStages - 1 slices in flight. Every iteration commits one group (maybe
  // empty) so that "wait until at most kStages - 2 are pending" always means "slice kt landed".
#pragma unroll
  for (int st = 0; st < kStages - 1; ++st) {
    if (st < kTiles) {
      loadTile<BM, THREADS>(xs + st * BM * kMmaBK, x, bm * BM, M, K, kt0 + st);
      loadTile<BN, THREADS>(ws + st * BN * kMmaBK, W, bn * BN, N, K, kt0 + st);
    }
    cpAsyncCommit();
  }
  for (int kt = 0; kt < kTiles; ++kt) {
    cpAsyncWait<kStages - 2>();
    __syncthreads();  // slice kt visible to all warps; every warp is done with slice kt - 1
    const int next = kt + kStages - 1;  // goes into the buffer slice kt - 1 used
    if (next < kTiles) {
      loadTile<BM, THREADS>(xs + (next % kStages) * BM * kMmaBK, x, bm * BM, M, K, kt0 + next);
      loadTile<BN, THREADS>(ws + (next % kStages) * BN * kMmaBK, W, bn * BN, N, K, kt0 + next);
    }
    cpAsyncCommit();
    const T* xt = xs + (kt % kStages) * BM * kMmaBK;
    const T* wt = ws + (kt % kStages) * BN * kMmaBK;
#pragma unroll
    for (int kk = 0; kk < kMmaBK / 16; ++kk) {
      uint32_t a[MI][4], bf[NI][2];
#pragma unroll
      for (int mi = 0; mi < MI; ++mi) {
        int row, chunk;
        mmaLdmatrixA(shape, warp, mi, kk, lane, row, chunk);
        ldmatrixX4(a[mi], xt + mmaSmemOffset(row, chunk));
      }
#pragma unroll
      for (int nj = 0; nj < NI / 2; ++nj) {
        int row, chunk;
        mmaLdmatrixB(shape, warp, nj, kk, lane, row, chunk);
        uint32_t r[4];
        ldmatrixX4(r, wt + mmaSmemOffset(row, chunk));
        bf[2 * nj][0] = r[0];
        bf[2 * nj][1] = r[1];
        bf[2 * nj + 1][0] = r[2];
        bf[2 * nj + 1][1] = r[3];
      }
#pragma unroll
      for (int mi = 0; mi < MI; ++mi)
#pragma unroll
        for (int ni = 0; ni < NI; ++ni) mma16816<T>(acc[mi][ni], a[mi], bf[ni][0], bf[ni][1]);
    }
  }
  cpAsyncWait<0>();  // only empty groups remain; leave none behind at exit

  // Registers (r, r + 1) are columns col, col + 1 of one row: one paired store when both exist.
  // A split's partial sums (b null) get their bias in splitKReduceKernel.
#pragma unroll
  for (int mi = 0; mi < MI; ++mi)
#pragma unroll
    for (int ni = 0; ni < NI; ++ni)
#pragma unroll
      for (int r = 0; r < 4; r += 2) {
        int row, col;
        mmaOutCoord(shape, bm, bn, warp, mi, ni, lane, r, row, col);
        if (row >= M || col >= N) continue;
        const long i = (long)row * N + col;
        const float b0 = b ? b[col] : 0.0f, b1 = b && col + 1 < N ? b[col + 1] : 0.0f;
        if (pairedStores && col + 1 < N) {
          storeEpiloguePair<T>(out, i, acc[mi][ni][r] + b0, acc[mi][ni][r + 1] + b1, ep);
        } else {
          storeEpilogue<T>(out, i, acc[mi][ni][r] + b0, ep);
          if (col + 1 < N) storeEpilogue<T>(out, i + 1, acc[mi][ni][r + 1] + b1, ep);
        }
      }
#endif
}

// out = epilogue(Σ_z partial[z] + b) per element, the splits added in index order z = 0, 1, ...
template <class T>
__global__ void splitKReduceKernel(void* out, const float* __restrict__ partial, const float* __restrict__ b, int M,
                                   int N, int splits, Epilogue ep) {
  const long total = (long)M * N, i = (long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= total) return;
  float v = partial[i];
  for (int z = 1; z < splits; ++z) v += partial[z * total + i];
  storeEpilogue<T>(out, i, v + b[i % N], ep);
}

template <class T, int BM, int BN, int WM, int WN>
void launch(void* out, const T* x, const T* W, const float* b, int M, int N, int K, Epilogue ep, int splits,
            float* workspace, cudaStream_t s) {
  const size_t bytes = (size_t)kStages * (BM + BN) * kMmaBK * sizeof(T);
  reserveSharedMemory(linearMmaKernel<T, BM, BN, WM, WN>, bytes, "linear (tensor cores)");
  // Equal k-slice counts per split, the last one shorter; no split left empty.
  const int splitTiles = mmaSplitTiles(K, splits);
  splits = mmaSplitCount(K, splitTiles);
  const dim3 grid(ceilDiv(M, BM), ceilDiv(N, BN), splits);
  if (splits == 1) {
    // Pairs (col even) stay aligned when every row starts aligned: N even, out 8-byte aligned.
    const bool paired = N % 2 == 0 && reinterpret_cast<uintptr_t>(out) % 8 == 0;
    launchKernel("linear (tensor cores)", linearMmaKernel<T, BM, BN, WM, WN>, grid, 32 * WM * WN, bytes, s, x, W, b,
                 out, M, N, K, splitTiles, ep, paired);
    return;
  }
  const bool paired = N % 2 == 0 && reinterpret_cast<uintptr_t>(workspace) % 8 == 0;
  launchKernel("linear (tensor cores, split-K)", linearMmaKernel<T, BM, BN, WM, WN>, grid, 32 * WM * WN, bytes, s, x,
               W, static_cast<const float*>(nullptr), static_cast<void*>(workspace), M, N, K, splitTiles,
               Epilogue::BiasFloat, paired);
  const long total = (long)M * N;
  launchKernel("linear (split-K reduce)", splitKReduceKernel<T>, dim3((unsigned)ceilDiv(total, 256L)), 256, 0, s, out,
               static_cast<const float*>(workspace), b, M, N, splits, ep);
}

template <class T>
void run(const GemmPlan& p, void* out, const T* x, const T* W, const float* b, int M, int N, int K, Epilogue ep,
         float* workspace, cudaStream_t s) {
  switch (p.tiling) {
    case MmaTiling::k128x128: return launch<T, 128, 128, 2, 4>(out, x, W, b, M, N, K, ep, p.splits, workspace, s);
    case MmaTiling::k128x64: return launch<T, 128, 64, 2, 2>(out, x, W, b, M, N, K, ep, p.splits, workspace, s);
    case MmaTiling::k64x64: return launch<T, 64, 64, 2, 2>(out, x, W, b, M, N, K, ep, p.splits, workspace, s);
  }
}

void checkShape(const void* x, const void* W, int M, int N, int K) {
  if (!linearMmaFits(x, W, K))
    throw CudaError("linear (tensor cores): needs K % 8 == 0 and 16-byte aligned x and W (K=" + std::to_string(K) +
                    ")");
  if (N > 65535 * 64) throw CudaError("linear (tensor cores): N=" + std::to_string(N) + " is too large");
}

}  // namespace

GemmDevice gemmDevice(const DeviceProperties& d) {
  GemmDevice g;
  g.sms = d.smCount;
  g.sharedPerSm = d.sharedPerSm;
  g.sharedPerBlockOptin = d.sharedPerBlockOptin;
  g.maxThreadsPerSm = d.maxThreadsPerSm;
  return g;
}

GemmPlan linearMmaPlan(int M, int N, int K, const GemmWorkspace& ws) {
  const GemmPlan p = chooseGemmPlan(M, N, K, gemmDevice(deviceProperties()), ws.data ? kMaxSplits : 1);
  if (p.splits == 1 || (size_t)p.splits * M * N <= ws.floats) return p;
  return chooseGemmPlan(M, N, K, gemmDevice(deviceProperties()), 1);  // workspace too small: no split
}

template <class T>
void linearMma(void* out, const T* x, const T* W, const float* b, int M, int N, int K, Epilogue ep, cudaStream_t s,
               const GemmWorkspace& ws) {
  checkShape(x, W, M, N, K);
  if (M == 0) return;
  run<T>(linearMmaPlan(M, N, K, ws), out, x, W, b, M, N, K, ep, ws.data, s);
}

template <class T>
void linearMmaWith(MmaTiling tiling, int splits, void* out, const T* x, const T* W, const float* b, int M, int N,
                   int K, Epilogue ep, cudaStream_t s, const GemmWorkspace& ws) {
  checkShape(x, W, M, N, K);
  if (splits < 1 || splits > kMaxSplits)
    throw CudaError("linear (tensor cores): splits must be 1 to " + std::to_string(kMaxSplits) + " (got " +
                    std::to_string(splits) + ")");
  if (splits > 1 && (!ws.data || (size_t)splits * M * N > ws.floats))
    throw CudaError("linear (tensor cores): " + std::to_string(splits) + " splits of " + std::to_string(M) + " x " +
                    std::to_string(N) + " need a workspace of " + std::to_string((size_t)splits * M * N) +
                    " floats (have " + std::to_string(ws.floats) + ")");
  if (!mmaTilingFits(tiling, N, gemmDevice(deviceProperties())))
    throw CudaError(std::string("linear (tensor cores): tiling ") + tileInfo(tiling).name + " cannot take N=" +
                    std::to_string(N) + " on this device");
  if (M == 0) return;
  GemmPlan p;
  p.tiling = tiling;
  p.splits = splits;
  run<T>(p, out, x, W, b, M, N, K, ep, ws.data, s);
}

template void linearMma<__half>(void*, const __half*, const __half*, const float*, int, int, int, Epilogue,
                                cudaStream_t, const GemmWorkspace&);
template void linearMma<__nv_bfloat16>(void*, const __nv_bfloat16*, const __nv_bfloat16*, const float*, int, int,
                                       int, Epilogue, cudaStream_t, const GemmWorkspace&);
template void linearMmaWith<__half>(MmaTiling, int, void*, const __half*, const __half*, const float*, int, int, int,
                                    Epilogue, cudaStream_t, const GemmWorkspace&);
template void linearMmaWith<__nv_bfloat16>(MmaTiling, int, void*, const __nv_bfloat16*, const __nv_bfloat16*,
                                           const float*, int, int, int, Epilogue, cudaStream_t, const GemmWorkspace&);

}  // namespace evit::cuda
