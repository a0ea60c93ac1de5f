// The CUDA backend's DeiT/EViT family: a prepared model that runs the whole forward pass of
// SPEC §1 on one device, with the same plan semantics and results (logits, kept origins,
// per-op profile) as the CPU backend. The context pool, graphs and recovery are DeviceModel's.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "../src/backend/backend.h"
#include "../src/backend/cuda_backend.h"
#include "../src/backend/host_weights.h"
#include "device_model.h"
#include "device_weights.h"
#include "execution_context.h"

namespace evit::cuda {

class CudaModel : public DeviceModel {
 public:
  // Uploads the weights and allocates options.streams execution contexts, each sized for
  // options.maxBatch images: no device allocation happens after this.
  CudaModel(const ModelConfig& cfg, const HostWeights& weights, const CudaOptions& options);
  ~CudaModel() override;
  const ModelConfig& config() const override { return cfg_; }
  bool takesPixels() const override { return true; }
  // Takes a free execution context (waits for one), runs the batch in chunks of at most
  // maxBatch images, and returns once the results are on the host.
  void forward(const ForwardRequest& req, ForwardResult& out) override;

 private:
  // Images [first, first + count) of the request, results written into `out` at their place.
  void runChunk(ExecutionContext& ctx, const ForwardRequest& req, const std::vector<int>& n, int first, int count,
                ForwardResult& out);
  // Queues the kernels of one pass, as a replayed graph where one is cached for this shape.
  void launch(ExecutionContext& ctx, int batch, const std::vector<BlockPlan>& plan, const std::vector<int>& n);
  // Queues every kernel of one pass on ctx.stream (no host synchronisation), in the compute type.
  void enqueue(ExecutionContext& ctx, int batch, const std::vector<BlockPlan>& plan, const std::vector<int>& n,
               OpTimer* timer);
  template <class T>
  void enqueueAs(ExecutionContext& ctx, int batch, const std::vector<BlockPlan>& plan, const std::vector<int>& n,
                 OpTimer* timer);

  ModelConfig cfg_;
  std::unique_ptr<DeviceWeights> weights_;
};

}  // namespace evit::cuda
