// Convolution as im2col + GEMM: im2col gathers each output pixel's receptive field into a row
// of T (one thread per column element, consecutive threads on consecutive columns, so writes
// are coalesced and NHWC reads run along channels), then linear<T> multiplies the rows by the
// relaid weight, with its epilogue (bias, ReLU, fp32 out) fused. The GEMM depth is padded to
// whole 16-byte chunks (conv_layout.h) so every convolution, the stem's 7×7 over 3 channels
// included, can take the tensor-core GEMM.
#include <string>
#include <type_traits>

#include "conv_layout.h"
#include "element_type.cuh"
#include "kernels.h"
#include "launch.cuh"

namespace evit::cuda {

namespace {

struct ConvGeometry {
  int H, W, Cin, k, stride, pad, Ho, Wo, K, Kp;
};

// cols[r, j]: r = (b·Ho + oy)·Wo + ox, j = (ky·k + kx)·Cin + c for j < K, zero for j in [K, Kp).
template <class T, class In, bool kNchw>
__global__ void im2colKernel(const In* __restrict__ x, T* __restrict__ cols, ConvGeometry g, long total) {
  const long i = blockIdx.x * (long)blockDim.x + threadIdx.x;
  if (i >= total) return;
  const long r = i / g.Kp;
  const int j = (int)(i % g.Kp);
  float v = 0.0f;
  if (j < g.K) {
    const int kc = g.k * g.Cin, ky = j / kc, kx = (j % kc) / g.Cin, c = j % g.Cin;
    const long perImage = (long)g.Ho * g.Wo;
    const long b = r / perImage;
    const int yx = (int)(r % perImage), oy = yx / g.Wo, ox = yx % g.Wo;
    const int iy = oy * g.stride - g.pad + ky, ix = ox * g.stride - g.pad + kx;
    if (iy >= 0 && iy < g.H && ix >= 0 && ix < g.W)
      v = toFloat(kNchw ? x[((b * g.Cin + c) * g.H + iy) * g.W + ix] : x[((b * g.H + iy) * g.W + ix) * g.Cin + c]);
  }
  cols[i] = fromFloat<T>(v);
}

ConvGeometry geometry(int H, int W, int Cin, int k, int stride, int pad) {
  return {H, W, Cin, k, stride, pad, (H + 2 * pad - k) / stride + 1, (W + 2 * pad - k) / stride + 1, k * k * Cin,
          convDepth(Cin, k)};
}

void checkShape(const char* what, int B, int H, int W, int Cin, int k, int stride, int pad) {
  if (B < 0 || H < 1 || W < 1 || Cin < 1 || k < 1 || stride < 1 || pad < 0 || H + 2 * pad < k || W + 2 * pad < k)
    throw CudaError(std::string(what) + ": need B >= 0, H, W, Cin, k, stride >= 1, pad >= 0 and the kernel inside the " +
                    "padded image (got B=" + std::to_string(B) + ", " + std::to_string(H) + "x" + std::to_string(W) +
                    "x" + std::to_string(Cin) + ", k=" + std::to_string(k) + ", stride=" + std::to_string(stride) +
                    ", pad=" + std::to_string(pad) + ")");
}

}  // namespace

template <class T, class In>
void im2col(T* cols, const In* x, ImageLayout layout, int B, int H, int W, int Cin, int k, int stride, int pad,
            cudaStream_t s) {
  checkShape("im2col", B, H, W, Cin, k, stride, pad);
  const ConvGeometry g = geometry(H, W, Cin, k, stride, pad);
  const long total = (long)B * g.Ho * g.Wo * g.Kp;
  if (total == 0) return;
  if (layout == ImageLayout::NCHW)
    launchKernel("im2col", im2colKernel<T, In, true>, ceilDiv(total, 256), 256, 0, s, x, cols, g, total);
  else
    launchKernel("im2col", im2colKernel<T, In, false>, ceilDiv(total, 256), 256, 0, s, x, cols, g, total);
}

template <class T, class In>
void conv2d(void* out, T* cols, const In* x, ImageLayout layout, const T* Wp, const float* b, int B, int H, int W,
            int Cin, int Cout, int k, int stride, int pad, Epilogue ep, cudaStream_t s) {
  checkShape("conv2d", B, H, W, Cin, k, stride, pad);
  if (ep == Epilogue::BiasResidual || ep == Epilogue::BiasGelu)
    throw CudaError("conv2d: the epilogue must be Bias, BiasRelu or BiasFloat");
  const ConvGeometry g = geometry(H, W, Cin, k, stride, pad);
  const long rows = (long)B * g.Ho * g.Wo;
  if (rows > 0x7FFFFFFF) throw CudaError("conv2d: " + std::to_string(rows) + " output pixels are too many for one call");
  if (rows == 0) return;
  if constexpr (std::is_same_v<In, T>) {
    if (k == 1 && stride == 1 && pad == 0 && g.Kp == Cin && layout == ImageLayout::NHWC)
      return linear<T>(out, x, Wp, b, (int)rows, Cout, Cin, ep, s);
  }
  im2col<T, In>(cols, x, layout, B, H, W, Cin, k, stride, pad, s);
  linear<T>(out, cols, Wp, b, (int)rows, Cout, g.Kp, ep, s);
}

#define EVIT_CONV_INSTANCES(T, In)                                                                                  \
  template void im2col<T, In>(T*, const In*, ImageLayout, int, int, int, int, int, int, int, cudaStream_t);       \
  template void conv2d<T, In>(void*, T*, const In*, ImageLayout, const T*, const float*, int, int, int, int, int, \
                              int, int, int, Epilogue, cudaStream_t);
EVIT_CONV_INSTANCES(float, float)
EVIT_CONV_INSTANCES(__half, float)
EVIT_CONV_INSTANCES(__half, __half)
EVIT_CONV_INSTANCES(__nv_bfloat16, float)
EVIT_CONV_INSTANCES(__nv_bfloat16, __nv_bfloat16)
#undef EVIT_CONV_INSTANCES

}  // namespace evit::cuda
