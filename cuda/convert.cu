// float → T, for weights at upload and for tests. Grid-stride so any n fits one launch.
#include "element_type.cuh"
#include "kernels.h"
#include "launch.cuh"

namespace evit::cuda {

namespace {

template <class T>
__global__ void convertKernel(const float* __restrict__ src, T* __restrict__ dst, long n) {
  for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
    dst[i] = fromFloat<T>(src[i]);
}

}  // namespace

template <class T>
void convert(T* dst, const float* src, long n, cudaStream_t s) {
  if (n <= 0) return;
  const unsigned blocks = ceilDiv(n, 256) < 65535u ? ceilDiv(n, 256) : 65535u;
  launchKernel("convert", convertKernel<T>, blocks, 256, 0, s, src, dst, n);
}

template void convert<float>(float*, const float*, long, cudaStream_t);
template void convert<__half>(__half*, const float*, long, cudaStream_t);
template void convert<__nv_bfloat16>(__nv_bfloat16*, const float*, long, cudaStream_t);

}  // namespace evit::cuda
