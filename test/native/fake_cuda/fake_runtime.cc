// The host-only CUDA stand-in's runtime: see cuda_runtime.h.
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <vector>

#include "fake_cuda.h"

struct FakeGraph {
  std::vector<std::function<void()>> work;
};
struct FakeStream {
  bool capturing = false;
  bool captureBroken = false;
  FakeGraph* graph = nullptr;
};
struct FakeEvent {
  std::chrono::steady_clock::time_point at;
};

namespace fake_cuda {
namespace {
std::mutex mu;
std::string failKernel;
int failCount = 0;
cudaError_t sticky = cudaSuccess, stickyPending = cudaSuccess;
bool failCapture = false;
thread_local cudaError_t lastError = cudaSuccess;
}  // namespace

Counters& counters() {
  static Counters c;
  return c;
}

void submit(cudaStream_t s, std::function<void()> work) {
  if (s && s->capturing) {
    s->graph->work.push_back(std::move(work));
    return;
  }
  work();
}

bool shouldFailLaunch(const std::string& kernel) {
  std::lock_guard<std::mutex> lock(mu);
  if (failCount > 0 && kernel == failKernel) {
    --failCount;
    return true;
  }
  return false;
}

void failLaunches(const std::string& kernel, int n) {
  std::lock_guard<std::mutex> lock(mu);
  failKernel = kernel;
  failCount = n;
}
void stickyErrorAtNextSync(cudaError_t e) {
  std::lock_guard<std::mutex> lock(mu);
  stickyPending = e;
}
void failNextCapture() {
  std::lock_guard<std::mutex> lock(mu);
  failCapture = true;
}
void reset() {
  std::lock_guard<std::mutex> lock(mu);
  failCount = 0;
  sticky = stickyPending = cudaSuccess;
  failCapture = false;
}
cudaError_t stickyState() {
  std::lock_guard<std::mutex> lock(mu);
  return sticky;
}

}  // namespace fake_cuda

using fake_cuda::counters;

const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
    case cudaErrorStreamCaptureInvalidated: return "cudaErrorStreamCaptureInvalidated";
    default: return "cudaErrorUnknown";
  }
}
const char* cudaGetErrorString(cudaError_t e) { return e == cudaSuccess ? "no error" : "emulated error"; }
cudaError_t cudaGetLastError() {
  // Sticky errors cannot be cleared: every call keeps returning them.
  if (cudaError_t s = fake_cuda::stickyState()) return s;
  cudaError_t e = fake_cuda::lastError;
  fake_cuda::lastError = cudaSuccess;
  return e;
}
cudaError_t cudaSetDevice(int) { return fake_cuda::stickyState(); }
cudaError_t cudaMalloc(void** p, size_t bytes) {
  *p = std::malloc(bytes ? bytes : 1);
  if (!*p) return cudaErrorMemoryAllocation;
  counters().liveAllocations++;
  return cudaSuccess;
}
cudaError_t cudaFree(void* p) {
  if (p) counters().liveAllocations--;
  std::free(p);
  return cudaSuccess;
}
cudaError_t cudaMallocHost(void** p, size_t bytes) { return cudaMalloc(p, bytes); }
cudaError_t cudaFreeHost(void* p) { return cudaFree(p); }
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind, cudaStream_t s) {
  if (cudaError_t e = fake_cuda::stickyState()) return e;
  fake_cuda::submit(s, [=] { std::memcpy(dst, src, bytes); });
  return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) {
  *s = new FakeStream;
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t s) {
  delete s;
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t) {
  {
    std::lock_guard<std::mutex> lock(fake_cuda::mu);
    if (fake_cuda::stickyPending) {
      fake_cuda::sticky = fake_cuda::stickyPending;
      fake_cuda::stickyPending = cudaSuccess;
    }
  }
  return fake_cuda::stickyState();
}
cudaError_t cudaEventCreate(cudaEvent_t* e) {
  *e = new FakeEvent;
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  delete e;
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
  fake_cuda::submit(s, [e] { e->at = std::chrono::steady_clock::now(); });
  return cudaSuccess;
}
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t a, cudaEvent_t b) {
  *ms = std::chrono::duration<float, std::milli>(b->at - a->at).count();
  return cudaSuccess;
}
cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode) {
  s->capturing = true;
  s->graph = new FakeGraph;
  std::lock_guard<std::mutex> lock(fake_cuda::mu);
  s->captureBroken = fake_cuda::failCapture;
  fake_cuda::failCapture = false;
  return cudaSuccess;
}
cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t* g) {
  s->capturing = false;
  *g = s->graph;
  s->graph = nullptr;
  if (s->captureBroken) {
    fake_cuda::lastError = cudaErrorStreamCaptureInvalidated;
    return cudaErrorStreamCaptureInvalidated;
  }
  counters().captures++;
  return cudaSuccess;
}
cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t g, unsigned long long) {
  *exec = new FakeGraph(*g);
  return cudaSuccess;
}
cudaError_t cudaGraphDestroy(cudaGraph_t g) {
  delete g;
  return cudaSuccess;
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t g) {
  delete g;
  return cudaSuccess;
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t g, cudaStream_t s) {
  if (cudaError_t e = fake_cuda::stickyState()) return e;
  counters().graphLaunches++;
  fake_cuda::submit(s, [g] {
    for (auto& w : g->work) w();
  });
  return cudaSuccess;
}
