// What every model family of the CUDA backend shares: a pool of execution contexts (a pass holds
// one from start to end, so `streams` batches can be in flight), a batch run in chunks of at most
// maxBatch images on one context, the CUDA-graph policy (a shape's first pass eager, its second
// captured, later ones replayed), and recovery after a failed pass, telling a sticky error (the
// device is lost for the process) from one that leaves the context usable.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "../src/backend/backend.h"
#include "../src/backend/cuda_backend.h"
#include "execution_context.h"

namespace evit::cuda {

class DeviceModel : public PreparedModel {
 public:
  ~DeviceModel() override;
  // Every context's device arena, allocated at load.
  size_t activationBytes() const override;

 protected:
  // Makes the options' device current; the family uploads its weights and then adds its contexts.
  explicit DeviceModel(const CudaOptions& options);
  // Adds a context to the pool (the family's constructor, once per stream).
  void addContext(std::unique_ptr<StreamContext> ctx);
  // Waits for every context's queued work; a family's destructor calls it before freeing its weights.
  void drain();

  // Runs images [0, batch) of a request: waits for a free context, then runChunk(ctx, first, count)
  // for chunks of at most maxBatch images, on this model's device (forward runs on whichever
  // worker thread is free). A failure waits out the queued work, marks the model dead if the
  // device is lost, and is rethrown.
  void runInChunks(int batch, const std::function<void(StreamContext&, int first, int count)>& runChunk);
  // Queues one pass on ctx.stream through `enqueue` (which queues kernels only, no synchronisation):
  // as a replay of the graph cached under `key` (the launch shapes), else eagerly.
  void launch(StreamContext& ctx, const std::vector<int>& key, const std::function<void()>& enqueue);

  const CudaOptions options_;
  const int device_ = 0;

 private:
  StreamContext& acquire();
  void release(StreamContext& ctx);
  // nullptr when capture is not possible; the caller then queues the pass eagerly.
  cudaGraphExec_t capture(StreamContext& ctx, const std::function<void()>& enqueue);
  void recover(StreamContext& ctx, const std::string& what);

  std::vector<std::unique_ptr<StreamContext>> contexts_;
  std::mutex mutex_;  // guards free_ and dead_
  std::condition_variable contextFreed_;
  std::vector<StreamContext*> free_;
  std::string dead_;  // non-empty once a sticky CUDA error has made the device unusable
  std::atomic<bool> graphs_{true};
  std::atomic<int> captureFailures_{0};
};

}  // namespace evit::cuda
