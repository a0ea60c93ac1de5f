// linear(): out = epilogue(x·Wᵀ + b). Half-precision shapes go to the tensor-core kernel
// (linear_mma.cu) when it can take them; everything else, and all fp32, to the tiled SIMT
// GEMM below: a 64 × 64 tile per block, 16-deep k-slices of x and W staged in shared
// memory as fp32, each thread a 4 × 4 grid of outputs (index math in tile_index.h).
#include <string>
#include <type_traits>

#include "kernels.h"
#include "launch.cuh"
#include "linear_epilogue.cuh"
#include "linear_internal.h"
#include "shared_memory.cuh"
#include "tile_index.h"

namespace evit::cuda {

namespace {

constexpr size_t kSimtSharedBytes = (size_t)kSimtBK * ((kSimtBM + 4) + (kSimtBN + 4)) * sizeof(float);
static_assert(kSimtBM == kSimtBN, "xs and ws rows have one length");

template <class T>
__global__ void __launch_bounds__(kSimtThreads) linearSimtKernel(const T* __restrict__ x, const T* __restrict__ W,
                                                                 const float* __restrict__ b, void* out, int M,
                                                                 int N, int K, Epilogue ep) {
  // k-major so the inner loop reads a row of 64 consecutive floats; +4 keeps rows 16-byte apart.
  auto xs = dynamicShared<float[kSimtBM + 4]>();  // [kSimtBK][kSimtBM + 4]
  auto ws = xs + kSimtBK;                         // [kSimtBK][kSimtBN + 4]
  const int bm = blockIdx.x, bn = blockIdx.y, tid = threadIdx.x;
  float acc[4][4] = {};
  for (int k0 = 0; k0 < K; k0 += kSimtBK) {
#pragma unroll
    for (int e = 0; e < kSimtBM * kSimtBK / kSimtThreads; ++e) {
      int r, k;
      simtLoadCoord(tid, e, r, k);
      const int gk = k0 + k, gm = bm * kSimtBM + r, gn = bn * kSimtBN + r;
      xs[k][r] = gm < M && gk < K ? toFloat(x[(long)gm * K + gk]) : 0.0f;
      ws[k][r] = gn < N && gk < K ? toFloat(W[(long)gn * K + gk]) : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kSimtBK; ++kk) {
      float a[4], w[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) a[i] = xs[kk][tid / 16 + 16 * i];
#pragma unroll
      for (int j = 0; j < 4; ++j) w[j] = ws[kk][tid % 16 + 16 * j];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] += a[i] * w[j];
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      int row, col;
      simtOutCoord(bm, bn, tid, i, j, row, col);
      if (row < M && col < N) storeEpilogue<T>(out, (long)row * N + col, acc[i][j] + b[col], ep);
    }
}

}  // namespace

template <class T>
void linearSimt(void* out, const T* x, const T* W, const float* b, int M, int N, int K, Epilogue ep, cudaStream_t s) {
  const dim3 grid(ceilDiv(M, kSimtBM), ceilDiv(N, kSimtBN));
  launchKernel("linear (SIMT)", linearSimtKernel<T>, grid, kSimtThreads, kSimtSharedBytes, s, x, W, b, out, M, N, K, ep);
}

template <class T>
void linear(void* out, const T* x, const T* W, const float* b, int M, int N, int K, Epilogue ep, cudaStream_t s,
            const GemmWorkspace& ws) {
  if (M < 0 || N < 1 || K < 1 || N > 65535 * kSimtBN)
    throw CudaError("linear: need M >= 0, 1 <= N <= " + std::to_string(65535 * kSimtBN) + ", K >= 1 (got M=" +
                    std::to_string(M) + ", N=" + std::to_string(N) + ", K=" + std::to_string(K) + ")");
  if (M == 0) return;
  if constexpr (std::is_same_v<T, float>) {
    linearSimt(out, x, W, b, M, N, K, ep, s);
  } else {
    if (linearMmaFits(x, W, K))
      linearMma(out, x, W, b, M, N, K, ep, s, ws);
    else
      linearSimt(out, x, W, b, M, N, K, ep, s);
  }
}

template void linear<float>(void*, const float*, const float*, const float*, int, int, int, Epilogue, cudaStream_t,
                            const GemmWorkspace&);
template void linear<__half>(void*, const __half*, const __half*, const float*, int, int, int, Epilogue,
                             cudaStream_t, const GemmWorkspace&);
template void linear<__nv_bfloat16>(void*, const __nv_bfloat16*, const __nv_bfloat16*, const float*, int, int, int,
                                    Epilogue, cudaStream_t, const GemmWorkspace&);
template void linearSimt<float>(void*, const float*, const float*, const float*, int, int, int, Epilogue, cudaStream_t);
template void linearSimt<__half>(void*, const __half*, const __half*, const float*, int, int, int, Epilogue,
                                 cudaStream_t);
template void linearSimt<__nv_bfloat16>(void*, const __nv_bfloat16*, const __nv_bfloat16*, const float*, int, int,
                                        int, Epilogue, cudaStream_t);

}  // namespace evit::cuda
