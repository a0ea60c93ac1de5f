// Deliberate invalid accesses in emulated kernels, one per run (argv[1]), for the ASan +
// UBSan build: each must stop the program with a report naming this file and the line
// marked "probe: <case>". "clean" runs the same kernels with valid arguments.
#include <cstdio>
#include <cstring>
#include <string>

unsigned char* probeShared() {
  extern __shared__ __align__(128) unsigned char evit_dynamic_shared[];
  return evit_dynamic_shared;
}

namespace {

__global__ void readPast(const float* x, float* out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i <= n) out[i % n] = x[i];  // probe: global
}

__global__ void sharedPast(float* out, int bytes) {
  unsigned char* s = probeShared();
  const int t = threadIdx.x;
  if (t < bytes) s[t] = (unsigned char)t;
  __syncthreads();
  if (t == 0) s[bytes] = 1;  // probe: shared
  out[t] = s[t % bytes];
}

__global__ void loadFloat4(const float* x, float* out, int offset) {
  const float4 v = *reinterpret_cast<const float4*>(x + offset);  // probe: float4
  out[threadIdx.x] = v.x + v.y + v.z + v.w;
}

__global__ void loadFloat2(const float* x, float* out, int offset) {
  const float2 v = *reinterpret_cast<const float2*>(x + offset);  // probe: float2
  out[threadIdx.x] = v.x + v.y;
}

template <class... P, class... A>
cudaError_t launch(void (*k)(P...), unsigned grid, unsigned block, size_t smem, A... args) {
  cudaLaunchConfig_t c = {};
  c.gridDim = grid;
  c.blockDim = block;
  c.dynamicSmemBytes = smem;
  return cudaLaunchKernelEx(&c, k, args...);
}

}  // namespace

int main(int argc, char** argv) {
  const std::string what = argc > 1 ? argv[1] : "clean";
  const bool clean = what == "clean";
  float *x = nullptr, *out = nullptr;
  cudaMalloc(&x, 40 * sizeof(float));
  cudaMalloc(&out, 64 * sizeof(float));
  cudaMemset(x, 0, 40 * sizeof(float));
  cudaError_t e = cudaSuccess;
  if (clean || what == "global") e = launch(readPast, 1, 64, 0, x, out, clean ? 39 : 40);
  if (clean || what == "shared") e = launch(sharedPast, 1, 64, 100, out, clean ? 99 : 100);
  if (clean || what == "float4") e = launch(loadFloat4, 1, 32, 0, (const float*)x, out, clean ? 4 : 2);
  if (clean || what == "float2") e = launch(loadFloat2, 1, 32, 0, (const float*)x, out, clean ? 2 : 1);
  std::printf("%s: %s\n", what.c_str(), cudaGetErrorName(e));
  cudaFree(x);
  cudaFree(out);
  return e == cudaSuccess ? 0 : 1;
}
