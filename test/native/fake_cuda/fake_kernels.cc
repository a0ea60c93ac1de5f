// The launch interface of cuda/kernels.h implemented with the CPU ops, on the host-only CUDA
// stand-in: each launch is submitted to its stream (run now, or recorded while capturing).
// fp32 only: the 16-bit instantiations throw, as a failed launch would.
#include <cmath>
#include <string>
#include <type_traits>
#include <vector>

#include "../../../cuda/kernels.h"
#include "../../../src/cpu/ops.h"
#include "../../../src/backend/cuda_backend.h"
#include "fake_cuda.h"

namespace fake_cuda {
bool shouldFailLaunch(const std::string& kernel);
}

namespace evit {
CudaReport probeCuda() {
  CudaReport r;
  r.compiled = r.available = true;
  r.devices.push_back({"host emulation", 9, 0, 0});
  return r;
}
}  // namespace evit

namespace evit::cuda {

void throwCuda(cudaError_t err, const char* what, const char* file, int line) {
  throw CudaError(std::string("CUDA error ") + cudaGetErrorName(err) + " in " + what + " at " + file + ":" +
                  std::to_string(line));
}

namespace {

template <class T>
void launch(const char* name, cudaStream_t s, std::function<void()> work) {
  if (!std::is_same_v<T, float>) throw CudaError(std::string(name) + ": the host emulation runs f32 only");
  if (fake_cuda::shouldFailLaunch(name)) throw CudaError(std::string("CUDA error cudaErrorLaunchFailure in ") + name);
  fake_cuda::counters().kernels++;
  fake_cuda::submit(s, [work = std::move(work)] {
    fake_cuda::counters().executed++;
    work();
  });
}

}  // namespace

template <class T>
void layerNorm(T* y, const float* x, long rowStride, const float* w, const float* b, int rows, int C, float eps,
               cudaStream_t s) {
  launch<T>("layerNorm", s, [=] { cpu::layerNorm((float*)y, x, rowStride, w, b, rows, C, eps); });
}

template <class T>
void linear(void* out, const T* x, const T* W, const float* b, int M, int N, int K, Epilogue ep, cudaStream_t s) {
  launch<T>("linear", s, [=] {
    const cpu::Epilogue e = ep == Epilogue::BiasGelu ? cpu::Epilogue::BiasGelu
                            : ep == Epilogue::BiasResidual ? cpu::Epilogue::BiasResidual
                                                           : cpu::Epilogue::Bias;
    cpu::linear((float*)out, (const float*)x, (const float*)W, b, M, N, K, e);
  });
}

template <class T>
void attention(T* out, float* clsProbs, const T* qkv, int B, int N, int heads, int headDim, cudaStream_t s) {
  launch<T>("attention", s, [=] {
    const float* q = (const float*)qkv;
    cpu::clsAttention((float*)out, nullptr, q, B, N, heads, headDim);
    if (!clsProbs) return;
    // Each head's softmax row 0, all N columns, as the kernel writes it.
    const int C = heads * headDim;
    for (int b = 0; b < B; ++b)
      for (int h = 0; h < heads; ++h) {
        std::vector<double> logit(N);
        double mx = -INFINITY, sum = 0;
        for (int j = 0; j < N; ++j) {
          double a = 0;
          for (int e = 0; e < headDim; ++e)
            a += (double)q[((long)b * N) * 3 * C + h * headDim + e] * q[((long)b * N + j) * 3 * C + C + h * headDim + e];
          logit[j] = a / std::sqrt((double)headDim);
          mx = std::max(mx, logit[j]);
        }
        for (int j = 0; j < N; ++j) sum += std::exp(logit[j] - mx);
        for (int j = 0; j < N; ++j) clsProbs[((long)b * heads + h) * N + j] = (float)(std::exp(logit[j] - mx) / sum);
      }
  });
}

void topkGatherFuse(float* y, int32_t* originsOut, const float* x, const float* clsProbs, const int32_t* originsIn,
                    int B, int N, int heads, int C, int k, bool fuse, int32_t fusedOrigin, cudaStream_t s) {
  launch<float>("topkGatherFuse", s, [=] {
    std::vector<float> scores((size_t)B * (N - 1));
    for (int b = 0; b < B; ++b)
      for (int j = 0; j < N - 1; ++j) {
        float sum = 0;
        for (int h = 0; h < heads; ++h) sum += clsProbs[((long)b * heads + h) * N + 1 + j];
        scores[(size_t)b * (N - 1) + j] = sum / heads;
      }
    std::vector<int32_t> idx((size_t)B * k);
    cpu::topk(idx.data(), scores.data(), B, N - 1, k);
    cpu::gatherFuse(y, originsOut, x, scores.data(), idx.data(), originsIn, B, N, C, k, fuse, fusedOrigin);
  });
}

template <class T>
void patchify(T* cols, const float* img, int B, int inChans, int gh, int gw, int p, cudaStream_t s) {
  launch<T>("patchify", s, [=] {
    float* c = (float*)cols;
    const int K = inChans * p * p, H = gh * p, W = gw * p;
    for (int b = 0; b < B; ++b)
      for (int gy = 0; gy < gh; ++gy)
        for (int gx = 0; gx < gw; ++gx)
          for (int ch = 0; ch < inChans; ++ch)
            for (int py = 0; py < p; ++py)
              for (int px = 0; px < p; ++px)
                c[((long)b * gh * gw + gy * gw + gx) * K + (ch * p + py) * p + px] =
                    img[(((long)b * inChans + ch) * H + gy * p + py) * W + gx * p + px];
  });
}

void assembleTokens(float* x, const float* patches, const float* cls, const float* pos, int B, int P, int C,
                    cudaStream_t s) {
  launch<float>("assembleTokens", s, [=] {
    for (int b = 0; b < B; ++b)
      for (int t = 0; t <= P; ++t)
        for (int c = 0; c < C; ++c)
          x[((long)b * (P + 1) + t) * C + c] = (t == 0 ? cls[c] : patches[((long)b * P + t - 1) * C + c]) + pos[(long)t * C + c];
  });
}

template <class T>
void convert(T*, const float*, long, cudaStream_t) {
  throw CudaError("convert: the host emulation runs f32 only");
}

#define INSTANTIATE(T)                                                                                        \
  template void layerNorm<T>(T*, const float*, long, const float*, const float*, int, int, float, cudaStream_t); \
  template void linear<T>(void*, const T*, const T*, const float*, int, int, int, Epilogue, cudaStream_t);      \
  template void attention<T>(T*, float*, const T*, int, int, int, int, cudaStream_t);                          \
  template void patchify<T>(T*, const float*, int, int, int, int, int, cudaStream_t);                          \
  template void convert<T>(T*, const float*, long, cudaStream_t);
INSTANTIATE(float)
INSTANTIATE(__half)
INSTANTIATE(__nv_bfloat16)

}  // namespace evit::cuda
