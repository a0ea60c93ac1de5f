// The CPU backend's Shunted Transformer: the forward pass of tools/reference/SHUNTED.md as a
// sequence of the CPU ops (ops.h). Nothing is dropped, so a request's plan is empty and the
// result has no kept tokens.
#pragma once

#include <array>
#include <memory>
#include <vector>

#include "../backend/backend.h"
#include "../backend/host_weights.h"
#include "../backend/shunted.h"
#include "activation_arena.h"

namespace evit::cpu {

class CpuShuntedModel : public PreparedModel {
 public:
  // cfg has passed validateShuntedConfig; weights hold shuntedTensorSpecs(cfg) and are this model's
  // alone: the conv and depthwise weights are relaid out in them, in place.
  CpuShuntedModel(const ShuntedConfig& cfg, std::shared_ptr<HostWeights> weights);
  InputShape input() const override { return {cfg_.inChans, cfg_.imgH, cfg_.imgW}; }
  int numClasses() const override { return cfg_.numClasses; }
  int planLength() const override { return 0; }
  std::vector<int> validatePlan(const std::vector<BlockPlan>& plan) const override { return validateShuntedPlan(plan); }
  size_t activationBytes() const override { return arena_.bytes(); }
  void forward(const ForwardRequest& req, ForwardResult& out) override;

 private:
  struct Affine {  // a linear layer or a norm: weight and bias as the ops take them
    const float* w = nullptr;
    const float* b = nullptr;
  };
  struct Block {
    Affine norm1, q, proj, norm2, fc1, fc2, dwconv;
    Affine sr[2], srNorm[2], kv[2], local[2];  // srRatio > 1: the two head groups
    Affine kvAll, localAll;                    // srRatio == 1
  };

  // Images [first, first + count) of the request, logits written into `out` at their place.
  void runChunk(const ForwardRequest& req, int first, int count, ForwardResult& out);

  ShuntedConfig cfg_;
  StageGrid stemGrid_;
  std::array<StageGrid, kShuntedStages> grids_;
  // Conv weights relaid out as [Cout, k, k, Cin], depthwise weights as [9, C].
  std::shared_ptr<const HostWeights> weights_;
  std::vector<Affine> stem_;  // the 7×7 conv, numConv 3×3 convs, the 2×2 conv
  Affine stemNorm_;
  std::array<Affine, kShuntedStages> patch_, patchNorm_, stageNorm_;  // patch_[0] unused
  std::vector<std::vector<Block>> blocks_;  // per stage
  Affine head_;
  std::vector<size_t> bufferFloats_;  // per image, see bufferSizes in shunted_model.cc

  ActivationArena arena_;
};

}  // namespace evit::cpu
