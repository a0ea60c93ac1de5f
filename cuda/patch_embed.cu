// The data movement around the patch-embedding GEMM: im2col before it (patchify), class
// token and position embedding after it (assembleTokens). One thread per output element,
// consecutive threads on consecutive outputs, so writes are coalesced and reads run along
// image rows.
#include "element_type.cuh"
#include "kernels.h"
#include "launch.cuh"

namespace evit::cuda {

namespace {

// cols[r, k]: r = b·P + patch, k = (c·p + ky)·p + kx, the conv weight's (c, ky, kx) order; the
// index of element i's pixel in the [B, inChans, H, W] image, and its channel c.
__device__ __forceinline__ long patchPixel(long i, int inChans, int gh, int gw, int p, int& c) {
  const int K = inChans * p * p, P = gh * gw;
  const long r = i / K;
  const int k = (int)(i % K);
  const int b = (int)(r / P), patch = (int)(r % P);
  const int gy = patch / gw, gx = patch % gw;
  const int ky = (k / p) % p, kx = k % p;
  c = k / (p * p);
  const long H = (long)gh * p, W = (long)gw * p;
  return (((long)b * inChans + c) * H + (long)gy * p + ky) * W + (long)gx * p + kx;
}

template <class T>
__global__ void patchifyKernel(const float* __restrict__ img, T* __restrict__ cols, int inChans, int gh, int gw,
                               int p, long total) {
  const long i = blockIdx.x * (long)blockDim.x + threadIdx.x;
  if (i >= total) return;
  int c;
  cols[i] = fromFloat<T>(img[patchPixel(i, inChans, gh, gw, p, c)]);
}

// The same from uint8 pixels: a quarter of fp32's bytes cross PCIe, and each is normalised here
// through lut[c, v] (src/backend/pixels.h), so cols are bit for bit those of the fp32 image.
template <class T>
__global__ void patchifyPixelsKernel(const uint8_t* __restrict__ px, const float* __restrict__ lut,
                                     T* __restrict__ cols, int inChans, int gh, int gw, int p, long total) {
  const long i = blockIdx.x * (long)blockDim.x + threadIdx.x;
  if (i >= total) return;
  int c;
  const uint8_t v = px[patchPixel(i, inChans, gh, gw, p, c)];
  cols[i] = fromFloat<T>(lut[c * 256 + v]);
}

// x[b, t, c] = (t == 0 ? cls[c] : patches[b·P + t - 1, c]) + pos[t, c].
__global__ void assembleTokensKernel(const float* __restrict__ patches, const float* __restrict__ cls,
                                     const float* __restrict__ pos, float* __restrict__ x, int P, int C,
                                     long total) {
  const long i = blockIdx.x * (long)blockDim.x + threadIdx.x;
  if (i >= total) return;
  const int c = (int)(i % C);
  const long bt = i / C;
  const int t = (int)(bt % (P + 1));
  const long b = bt / (P + 1);
  const float v = t == 0 ? cls[c] : patches[(b * P + t - 1) * C + c];
  x[i] = v + pos[(long)t * C + c];
}

}  // namespace

template <class T>
void patchify(T* cols, const float* img, int B, int inChans, int gh, int gw, int p, cudaStream_t s) {
  const long total = (long)B * gh * gw * inChans * p * p;
  if (total == 0) return;
  launchKernel("patchify", patchifyKernel<T>, ceilDiv(total, 256), 256, 0, s, img, cols, inChans, gh, gw, p, total);
}

template <class T>
void patchifyPixels(T* cols, const uint8_t* px, const float* lut, int B, int inChans, int gh, int gw, int p,
                    cudaStream_t s) {
  const long total = (long)B * gh * gw * inChans * p * p;
  if (total == 0) return;
  launchKernel("patchifyPixels", patchifyPixelsKernel<T>, ceilDiv(total, 256), 256, 0, s, px, lut, cols, inChans, gh, gw,
               p, total);
}

void assembleTokens(float* x, const float* patches, const float* cls, const float* pos, int B, int P, int C,
                    cudaStream_t s) {
  const long total = (long)B * (P + 1) * C;
  if (total == 0) return;
  launchKernel("assembleTokens", assembleTokensKernel, ceilDiv(total, 256), 256, 0, s, patches, cls, pos, x, P, C, total);
}

template void patchify<float>(float*, const float*, int, int, int, int, int, cudaStream_t);
template void patchify<__half>(__half*, const float*, int, int, int, int, int, cudaStream_t);
template void patchify<__nv_bfloat16>(__nv_bfloat16*, const float*, int, int, int, int, int, cudaStream_t);
template void patchifyPixels<float>(float*, const uint8_t*, const float*, int, int, int, int, int, cudaStream_t);
template void patchifyPixels<__half>(__half*, const uint8_t*, const float*, int, int, int, int, int, cudaStream_t);
template void patchifyPixels<__nv_bfloat16>(__nv_bfloat16*, const uint8_t*, const float*, int, int, int, int, int,
                                            cudaStream_t);

}  // namespace evit::cuda
