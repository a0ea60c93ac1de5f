// The CPU backend: a prepared model that runs the whole forward pass of SPEC §1.
#pragma once

#include <memory>
#include <vector>

#include "../backend/backend.h"
#include "../backend/host_weights.h"
#include "activation_arena.h"

namespace evit::cpu {

class CpuModel : public PreparedModel {
 public:
  CpuModel(const ModelConfig& cfg, std::shared_ptr<const HostWeights> weights);
  const ModelConfig& config() const override { return cfg_; }
  bool takesPixels() const override { return true; }
  size_t activationBytes() const override { return arena_.bytes(); }
  void forward(const ForwardRequest& req, ForwardResult& out) override;

 private:
  // Images [first, first + count) of the request, results written into `out` at their place.
  void runChunk(const ForwardRequest& req, int first, int count, ForwardResult& out);

  ModelConfig cfg_;
  std::shared_ptr<const HostWeights> weights_;
  ActivationArena arena_;
  // Top-k indices and token origins, grow-only like the arena, under the same lock.
  std::vector<int32_t> idx_, origins_, nextOrigins_;
};

}  // namespace evit::cpu
