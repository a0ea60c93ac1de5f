// The launch interface of cuda/kernels.h implemented with the CPU ops, on the host-only CUDA
// stand-in: each launch is submitted to its stream (run now, or recorded while capturing).
// fp32 only: the 16-bit instantiations throw, as a failed launch would.
#include <cmath>
#include <string>
#include <type_traits>
#include <vector>

#include "../../../cuda/kernels.h"
#include "../../../src/cpu/ops.h"
#include "../../../src/cuda_probe.h"
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
void layerNorm(const float* x, long rowStride, const float* w, const float* b, T* y, int rows, int C, float eps,
               cudaStream_t s) {
  launch<T>("layerNorm", s, [=] {
    for (int r = 0; r < rows; ++r) cpu::layerNorm(x + r * rowStride, (float*)y + (long)r * C, 1, C, w, b, eps);
  });
}

template <class T>
void linear(const T* x, const T* W, const float* b, void* out, int M, int N, int K, Epilogue ep, cudaStream_t s) {
  launch<T>("linear", s, [=] {
    const cpu::Epilogue e = ep == Epilogue::BiasGelu ? cpu::Epilogue::BiasGelu
                            : ep == Epilogue::BiasResidual ? cpu::Epilogue::BiasResidual
                                                           : cpu::Epilogue::Bias;
    cpu::linear((const float*)x, M, K, (const float*)W, b, N, (float*)out, e);
  });
}

template <class T>
void attention(const T* qkv, T* out, float* clsProbs, int B, int N, int heads, int headDim, cudaStream_t s) {
  launch<T>("attention", s, [=] {
    const float* q = (const float*)qkv;
    cpu::clsAttention(q, B, N, heads, headDim, (float*)out, nullptr);
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

void topkGatherFuse(const float* x, const float* clsProbs, float* y, const int32_t* originsIn, int32_t* originsOut,
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
    cpu::topk(scores.data(), B, N - 1, k, idx.data());
    cpu::gatherFuse(x, B, N, C, scores.data(), idx.data(), k, fuse, y, originsIn, originsOut, fusedOrigin);
  });
}

template <class T>
void patchify(const float* img, T* cols, int B, int inChans, int gh, int gw, int p, cudaStream_t s) {
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

void assembleTokens(const float* patches, const float* cls, const float* pos, float* x, int B, int P, int C,
                    cudaStream_t s) {
  launch<float>("assembleTokens", s, [=] {
    for (int b = 0; b < B; ++b)
      for (int t = 0; t <= P; ++t)
        for (int c = 0; c < C; ++c)
          x[((long)b * (P + 1) + t) * C + c] = (t == 0 ? cls[c] : patches[((long)b * P + t - 1) * C + c]) + pos[(long)t * C + c];
  });
}

template <class T>
void convert(const float*, T*, long, cudaStream_t) {
  throw CudaError("convert: the host emulation runs f32 only");
}

#define INSTANTIATE(T)                                                                                        \
  template void layerNorm<T>(const float*, long, const float*, const float*, T*, int, int, float, cudaStream_t); \
  template void linear<T>(const T*, const T*, const float*, void*, int, int, int, Epilogue, cudaStream_t);      \
  template void attention<T>(const T*, T*, float*, int, int, int, int, cudaStream_t);                          \
  template void patchify<T>(const float*, T*, int, int, int, int, int, cudaStream_t);                          \
  template void convert<T>(const float*, T*, long, cudaStream_t);
INSTANTIATE(float)
INSTANTIATE(__half)
INSTANTIATE(__nv_bfloat16)

}  // namespace evit::cuda
