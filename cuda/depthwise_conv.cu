// The 3×3 depthwise convolution (stride 1, zero padding 1) with the add every use of it in the
// Shunted Transformer has (u + dw(u) in the MLP, v + lc(v) and o + lc(v) in attention) and the
// MLP's GELU fused: one thread per output element, consecutive threads on consecutive channels
// of one pixel, so every tap's read of x, the add's read and the store are coalesced. fp32
// throughout (bias, then the taps in row order, then the add, as the CPU op), rounded to T once.
#include <string>

#include "device_math.h"
#include "element_type.cuh"
#include "kernels.h"
#include "launch.cuh"

namespace evit::cuda {

namespace {

// out and add may be the same tensor (o + lc(v) in place): neither is __restrict__.
template <class T, bool kGelu>
__global__ void depthwise3x3Kernel(const T* __restrict__ x, long ldx, const T* add, long ldAdd,
                                   const float* __restrict__ Wt, const float* __restrict__ b, T* out, int H, int W,
                                   int C, long total) {
  const long i = blockIdx.x * (long)blockDim.x + threadIdx.x;
  if (i >= total) return;
  const int c = (int)(i % C);
  const long p = i / C;
  const int xx = (int)(p % W), y = (int)((p / W) % H);
  float acc = b[c];
  for (int dy = -1; dy <= 1; ++dy) {
    if (y + dy < 0 || y + dy >= H) continue;
    for (int dx = -1; dx <= 1; ++dx) {
      if (xx + dx < 0 || xx + dx >= W) continue;
      acc += Wt[((dy + 1) * 3 + dx + 1) * C + c] * toFloat(x[(p + (long)dy * W + dx) * ldx + c]);
    }
  }
  if (add) acc += toFloat(add[p * ldAdd + c]);
  out[p * C + c] = fromFloat<T>(kGelu ? geluErf(acc) : acc);
}

}  // namespace

template <class T>
void depthwise3x3(T* out, const T* x, long ldx, const T* add, long ldAdd, const float* Wt, const float* b, int B,
                  int H, int W, int C, bool gelu, cudaStream_t s) {
  if (B < 0 || H < 1 || W < 1 || C < 1 || ldx < C || (add && ldAdd < C))
    throw CudaError("depthwise3x3: need B >= 0, H, W, C >= 1 and row strides of at least C (got B=" +
                    std::to_string(B) + ", " + std::to_string(H) + "x" + std::to_string(W) + "x" + std::to_string(C) +
                    ", ldx=" + std::to_string(ldx) + ", ldAdd=" + std::to_string(ldAdd) + ")");
  const long total = (long)B * H * W * C;
  if (total == 0) return;
  if (gelu)
    launchKernel("depthwise3x3", depthwise3x3Kernel<T, true>, ceilDiv(total, 256), 256, 0, s, x, ldx, add, ldAdd, Wt,
                 b, out, H, W, C, total);
  else
    launchKernel("depthwise3x3", depthwise3x3Kernel<T, false>, ceilDiv(total, 256), 256, 0, s, x, ldx, add, ldAdd, Wt,
                 b, out, H, W, C, total);
}

template void depthwise3x3<float>(float*, const float*, long, const float*, long, const float*, const float*, int, int,
                                  int, int, bool, cudaStream_t);
template void depthwise3x3<__half>(__half*, const __half*, long, const __half*, long, const float*, const float*, int,
                                   int, int, int, bool, cudaStream_t);
template void depthwise3x3<__nv_bfloat16>(__nv_bfloat16*, const __nv_bfloat16*, long, const __nv_bfloat16*, long,
                                          const float*, const float*, int, int, int, int, bool, cudaStream_t);

}  // namespace evit::cuda
