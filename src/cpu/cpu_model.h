// The CPU backend: a prepared model that runs the whole forward pass of SPEC §1.
#pragma once

#include <memory>
#include <vector>

#include "../backend/backend.h"
#include "../backend/host_weights.h"

namespace evit::cpu {

class CpuModel : public PreparedModel {
 public:
  CpuModel(const ModelConfig& cfg, std::shared_ptr<const HostWeights> weights);
  const ModelConfig& config() const override { return cfg_; }
  void forward(const ForwardRequest& req, ForwardResult& out) override;

 private:
  // Activations are carved from one grow-only block kept between passes: fresh buffers per
  // pass cost page faults and zeroing on every call. One pass at a time uses it (the pool's
  // pass lock), and it is sized for the largest batch seen.
  float* arena(size_t floats);

  ModelConfig cfg_;
  std::shared_ptr<const HostWeights> weights_;
  std::unique_ptr<float[]> arena_;
  size_t arenaFloats_ = 0;
  // Top-k indices and token origins, grow-only like the arena, under the same lock.
  std::vector<int32_t> idx_, origins_, nextOrigins_;
};

}  // namespace evit::cpu
