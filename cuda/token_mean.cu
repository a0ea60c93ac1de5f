// The Shunted Transformer's pooling before its head: the mean over an image's tokens. One
// thread per (image, channel), consecutive threads on consecutive channels (coalesced reads of
// each token row), summing the tokens in order: deterministic, whatever the launch.
#include <string>

#include "element_type.cuh"
#include "kernels.h"
#include "launch.cuh"

namespace evit::cuda {

namespace {

template <class T>
__global__ void meanTokensKernel(const float* __restrict__ x, T* __restrict__ out, int N, int C, long total) {
  const long i = blockIdx.x * (long)blockDim.x + threadIdx.x;
  if (i >= total) return;
  const long b = i / C;
  const int c = (int)(i % C);
  const float* col = x + b * N * C + c;
  float acc = 0.0f;
  for (int n = 0; n < N; ++n) acc += col[(long)n * C];
  out[i] = fromFloat<T>(acc / (float)N);
}

}  // namespace

template <class T>
void meanTokens(T* out, const float* x, int B, int N, int C, cudaStream_t s) {
  if (B < 0 || N < 1 || C < 1)
    throw CudaError("meanTokens: need B >= 0, N >= 1 and C >= 1 (got B=" + std::to_string(B) + ", N=" +
                    std::to_string(N) + ", C=" + std::to_string(C) + ")");
  const long total = (long)B * C;
  if (total == 0) return;
  launchKernel("meanTokens", meanTokensKernel<T>, ceilDiv(total, 256), 256, 0, s, x, out, N, C, total);
}

template void meanTokens<float>(float*, const float*, int, int, int, cudaStream_t);
template void meanTokens<__half>(__half*, const float*, int, int, int, cudaStream_t);
template void meanTokens<__nv_bfloat16>(__nv_bfloat16*, const float*, int, int, int, cudaStream_t);

}  // namespace evit::cuda
