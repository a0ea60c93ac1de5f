// The CUDA backend's Shunted Transformer: the forward pass of tools/reference/SHUNTED.md as a
// sequence of the CUDA ops (kernels.h), the same sequence as the CPU backend's
// (src/cpu/shunted_model.cc), with the same results (logits; no kept tokens) and profile slots.
// The context pool, graphs and recovery are DeviceModel's.
#pragma once

#include <array>
#include <vector>

#include "../src/backend/backend.h"
#include "../src/backend/cuda_backend.h"
#include "../src/backend/host_weights.h"
#include "../src/backend/shunted.h"
#include "device_model.h"
#include "device_weights.h"

namespace evit::cuda {

struct ShuntedContext;

class CudaShuntedModel : public DeviceModel {
 public:
  // Device memory for one convolution call's im2col columns (see convChunk()).
  static constexpr size_t kColumnBudget = 64u << 20;

  // cfg has passed validateShuntedConfig; weights hold shuntedTensorSpecs(cfg) (BatchNorms folded)
  // and are only read: the device keeps its own relaid copy. Throws CudaError when a stage's head
  // dim or key count is more than the attention kernels take on this device. columnBudget: tests
  // pass a small one to run the convolutions in chunks of few images.
  CudaShuntedModel(const ShuntedConfig& cfg, const HostWeights& weights, const CudaOptions& options,
                   size_t columnBudget = kColumnBudget);
  ~CudaShuntedModel() override;
  InputShape input() const override { return {cfg_.inChans, cfg_.imgH, cfg_.imgW}; }
  int numClasses() const override { return cfg_.numClasses; }
  int planLength() const override { return 0; }
  std::vector<int> validatePlan(const std::vector<BlockPlan>& plan) const override { return validateShuntedPlan(plan); }
  void forward(const ForwardRequest& req, ForwardResult& out) override;

  // Images per convolution call: the stem's im2col columns of a whole maxBatch may be large
  // (576 halves per pixel of a 112 × 112 grid for a 3×3 conv, 14 MiB an image), so convolutions
  // run in chunks of as many images as fit the column budget (at least one).
  int convChunk() const { return convChunk_; }

 private:
  struct Gemm {  // a linear layer or a convolution: weight in the compute type, fp32 bias
    const void* w = nullptr;
    const float* b = nullptr;
  };
  struct Vec {  // a norm (weight, bias) or depthwise taps [9, C] and bias, fp32
    const float* w = nullptr;
    const float* b = nullptr;
  };
  struct Block {
    Vec norm1, norm2, dwconv;
    Gemm q, proj, fc1, fc2;
    Gemm sr[2], kv[2];  // srRatio > 1: the two head groups
    Vec srNorm[2], local[2];
    Gemm kvAll;  // srRatio == 1
    Vec localAll;
  };

  void runChunk(ShuntedContext& ctx, const ForwardRequest& req, int first, int count, ForwardResult& out);
  // Queues every kernel of one pass on ctx.stream (no host synchronisation), in the compute type.
  void enqueue(ShuntedContext& ctx, int batch, OpTimer* timer);
  template <class T>
  void enqueueAs(ShuntedContext& ctx, int batch, OpTimer* timer);

  ShuntedConfig cfg_;
  StageGrid stemGrid_;
  std::array<StageGrid, kShuntedStages> grids_;
  int convChunk_ = 1;
  WeightUpload weights_;
  std::vector<Gemm> stem_;  // the 7×7 conv, numConv 3×3 convs, the 2×2 conv
  Vec stemNorm_;
  std::array<Gemm, kShuntedStages> patch_;  // patch_[0] unused
  std::array<Vec, kShuntedStages> patchNorm_, stageNorm_;
  std::vector<std::vector<Block>> blocks_;  // per stage
  Gemm head_;
};

}  // namespace evit::cuda
