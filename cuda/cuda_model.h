// The CUDA backend: a prepared model that runs the whole forward pass of SPEC §1 on one
// device, with the same plan semantics and results (logits, kept origins, per-op profile)
// as the CPU backend.
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "../src/backend/backend.h"
#include "../src/backend/cuda_backend.h"
#include "../src/backend/host_weights.h"
#include "device_weights.h"
#include "execution_context.h"

namespace evit::cuda {

class CudaModel : public PreparedModel {
 public:
  // Uploads the weights and allocates options.streams execution contexts, each sized for
  // options.maxBatch images: no device allocation happens after this.
  CudaModel(const ModelConfig& cfg, const HostWeights& weights, const CudaOptions& options);
  ~CudaModel() override;
  const ModelConfig& config() const override { return cfg_; }
  // Every context's device arena, allocated at load.
  size_t activationBytes() const override;
  // Takes a free execution context (waits for one), runs the batch in chunks of at most
  // maxBatch images, and returns once the results are on the host.
  void forward(const ForwardRequest& req, ForwardResult& out) override;

 private:
  ExecutionContext& acquire();
  void release(ExecutionContext& ctx);
  // Images [first, first + count) of the request, results written into `out` at their place.
  void runChunk(ExecutionContext& ctx, const ForwardRequest& req, const std::vector<int>& n, int first, int count,
                ForwardResult& out);
  // Queues the kernels of one pass, as a replayed graph where one is cached for this shape.
  void launch(ExecutionContext& ctx, int batch, const std::vector<BlockPlan>& plan, const std::vector<int>& n);
  // nullptr when capture is not possible; the caller then queues the pass eagerly.
  cudaGraphExec_t capture(ExecutionContext& ctx, int batch, const std::vector<BlockPlan>& plan,
                          const std::vector<int>& n);
  // Queues every kernel of one pass on ctx.stream (no host synchronisation), in the compute type.
  void enqueue(ExecutionContext& ctx, int batch, const std::vector<BlockPlan>& plan, const std::vector<int>& n,
               OpTimer* timer);
  template <class T>
  void enqueueAs(ExecutionContext& ctx, int batch, const std::vector<BlockPlan>& plan, const std::vector<int>& n,
                 OpTimer* timer);
  // After a failed pass: waits out the work already queued and tells a sticky error (the
  // device context is lost for the whole process) from one that leaves it usable.
  void recover(ExecutionContext& ctx, const std::string& what);

  ModelConfig cfg_;
  CudaOptions options_;
  int device_ = 0;
  std::unique_ptr<DeviceWeights> weights_;
  std::vector<std::unique_ptr<ExecutionContext>> contexts_;

  std::mutex mutex_;  // guards free_ and dead_
  std::condition_variable contextFreed_;
  std::vector<ExecutionContext*> free_;
  std::string dead_;  // non-empty once a sticky CUDA error has made the device unusable

  std::atomic<bool> graphs_{true};
  std::atomic<int> captureFailures_{0};
};

}  // namespace evit::cuda
