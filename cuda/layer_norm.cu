// LayerNorm of fp32 rows into T, one warp per row. Two passes over the row in fp32 (the
// mean, then the variance of the centred values) instead of E[x²] − mean², which loses
// everything when |mean| ≫ σ. The row is read three times; it stays in L1 between passes.
// Not fused into the following GEMM: the normalised row is needed in T anyway, and the
// GEMM's A-load then stays a plain cp.async stream. The GELU variant (shunted attention's
// sr branch) applies the activation in fp32 before the one rounding to T.
#include "device_math.h"
#include "element_type.cuh"
#include "kernels.h"
#include "launch.cuh"

namespace evit::cuda {

namespace {

constexpr int kRowsPerBlock = 8;

template <class T, bool kGelu>
__global__ void layerNormKernel(const float* __restrict__ x, long rowStride, const float* __restrict__ w,
                                const float* __restrict__ b, T* __restrict__ y, int rows, int C, float eps) {
  const int row = blockIdx.x * kRowsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;  // whole warps exit together: the shuffles below stay full-warp
  const float* xr = x + row * rowStride;
  float sum = 0.0f;
  for (int c = lane; c < C; c += 32) sum += xr[c];
  const float mean = warpSum(sum) / (float)C;
  float sq = 0.0f;
  for (int c = lane; c < C; c += 32) {
    const float d = xr[c] - mean;
    sq += d * d;
  }
  const float inv = rsqrtf(warpSum(sq) / (float)C + eps);
  T* yr = y + (long)row * C;
  for (int c = lane; c < C; c += 32) {
    const float v = (xr[c] - mean) * inv * w[c] + b[c];
    yr[c] = fromFloat<T>(kGelu ? geluErf(v) : v);
  }
}

}  // namespace

template <class T>
void layerNorm(T* out, const float* x, long rowStride, const float* w, const float* b, int rows, int C, float eps,
               cudaStream_t s) {
  if (rows <= 0) return;
  launchKernel("layerNorm", layerNormKernel<T, false>, ceilDiv(rows, kRowsPerBlock), 32 * kRowsPerBlock, 0, s, x,
               rowStride, w, b, out, rows, C, eps);
}

template <class T>
void layerNormGelu(T* out, const float* x, long rowStride, const float* w, const float* b, int rows, int C, float eps,
                   cudaStream_t s) {
  if (rows <= 0) return;
  launchKernel("layerNormGelu", layerNormKernel<T, true>, ceilDiv(rows, kRowsPerBlock), 32 * kRowsPerBlock, 0, s, x,
               rowStride, w, b, out, rows, C, eps);
}

template void layerNorm<float>(float*, const float*, long, const float*, const float*, int, int, float, cudaStream_t);
template void layerNorm<__half>(__half*, const float*, long, const float*, const float*, int, int, float, cudaStream_t);
template void layerNorm<__nv_bfloat16>(__nv_bfloat16*, const float*, long, const float*, const float*, int, int, float,
                                       cudaStream_t);
template void layerNormGelu<float>(float*, const float*, long, const float*, const float*, int, int, float,
                                   cudaStream_t);
template void layerNormGelu<__half>(__half*, const float*, long, const float*, const float*, int, int, float,
                                    cudaStream_t);
template void layerNormGelu<__nv_bfloat16>(__nv_bfloat16*, const float*, long, const float*, const float*, int, int,
                                           float, cudaStream_t);

}  // namespace evit::cuda
