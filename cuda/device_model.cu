#include "device_model.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "kernels.h"

namespace evit::cuda {

namespace {

// Capture failures after which a model stops trying graphs and always launches eagerly.
constexpr int kMaxCaptureFailures = 3;

// EVIT_CUDA_GRAPHS=0 launches every pass kernel by kernel (for debugging and sanitizers).
bool graphsEnabled() {
  const char* v = std::getenv("EVIT_CUDA_GRAPHS");
  return !(v && std::strcmp(v, "0") == 0);
}

}  // namespace

DeviceModel::DeviceModel(const CudaOptions& options) : options_(options), graphs_(graphsEnabled()) {
  EVIT_CUDA_CHECK(cudaSetDevice(device_));
}

DeviceModel::~DeviceModel() {
  drain();
  contexts_.clear();
}

void DeviceModel::drain() {
  // Every forward holds a reference to the model, so no pass is running; drain anyway.
  cudaSetDevice(device_);
  for (auto& ctx : contexts_) cudaStreamSynchronize(ctx->stream);
}

void DeviceModel::addContext(std::unique_ptr<StreamContext> ctx) {
  contexts_.push_back(std::move(ctx));
  free_.push_back(contexts_.back().get());
}

size_t DeviceModel::activationBytes() const {
  size_t total = 0;
  for (const auto& ctx : contexts_) total += ctx->device.bytes();
  return total;
}

StreamContext& DeviceModel::acquire() {
  std::unique_lock<std::mutex> lock(mutex_);
  contextFreed_.wait(lock, [&] { return !free_.empty(); });
  StreamContext* ctx = free_.back();
  free_.pop_back();
  return *ctx;
}

void DeviceModel::release(StreamContext& ctx) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    free_.push_back(&ctx);
  }
  contextFreed_.notify_one();
}

void DeviceModel::runInChunks(int batch, const std::function<void(StreamContext&, int, int)>& runChunk) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!dead_.empty()) throw CudaError(dead_);
  }
  // The current device is per host thread, and forward runs on whichever worker thread is free.
  EVIT_CUDA_CHECK(cudaSetDevice(device_));
  StreamContext& ctx = acquire();
  struct Lease {
    DeviceModel& m;
    StreamContext& ctx;
    ~Lease() { m.release(ctx); }
  } lease{*this, ctx};
  try {
    for (int first = 0; first < batch; first += options_.maxBatch)
      runChunk(ctx, first, std::min(options_.maxBatch, batch - first));
  } catch (const std::exception& e) {
    recover(ctx, e.what());
    throw;
  }
}

void DeviceModel::launch(StreamContext& ctx, const std::vector<int>& key, const std::function<void()>& enqueue) {
  if (!graphs_.load()) return enqueue();
  GraphCache::Entry& entry = ctx.graphs.use(key);
  if (!entry.exec) {
    // A shape's first pass runs eagerly: it loads the kernels' modules outside any capture,
    // and shapes used only once never pay for a capture.
    if (entry.uses < 2) return enqueue();
    entry.exec = capture(ctx, enqueue);
    if (!entry.exec) return enqueue();
  }
  EVIT_CUDA_CHECK(cudaGraphLaunch(entry.exec, ctx.stream));
}

cudaGraphExec_t DeviceModel::capture(StreamContext& ctx, const std::function<void()>& enqueue) {
  // Thread-local mode: passes captured or running on other threads are not disturbed.
  EVIT_CUDA_CHECK(cudaStreamBeginCapture(ctx.stream, cudaStreamCaptureModeThreadLocal));
  bool queued = true;
  try {
    enqueue();
  } catch (...) {
    queued = false;  // a real launch error shows again when the pass runs eagerly
  }
  cudaGraph_t graph = nullptr;
  cudaError_t e = cudaStreamEndCapture(ctx.stream, &graph);
  cudaGraphExec_t exec = nullptr;
  if (queued && e == cudaSuccess && graph) e = cudaGraphInstantiate(&exec, graph, 0);
  if (graph) cudaGraphDestroy(graph);
  if (!queued || e != cudaSuccess || !exec) {
    (void)cudaGetLastError();  // capture errors are not sticky; clear them for the eager pass
    if (++captureFailures_ >= kMaxCaptureFailures) graphs_ = false;
    return nullptr;
  }
  return exec;
}

void DeviceModel::recover(StreamContext& ctx, const std::string& what) {
  // Kernels queued before the failure may still run: the context's buffers are reused only after them.
  cudaStreamSynchronize(ctx.stream);
  (void)cudaGetLastError();
  const cudaError_t state = cudaStreamSynchronize(ctx.stream);
  if (state == cudaSuccess) return;
  std::lock_guard<std::mutex> lock(mutex_);
  if (dead_.empty())
    dead_ = std::string("the CUDA device is unusable after an earlier error (") + cudaGetErrorName(state) +
            ": " + what + "); restart the process to use it again";
}

}  // namespace evit::cuda
