// The CPU backend: a prepared model that runs the whole forward pass of SPEC §1.
#pragma once

#include <atomic>
#include <memory>
#include <vector>

#include "../backend/backend.h"
#include "../backend/host_weights.h"
#include "../backend/page_buffer.h"

namespace evit::cpu {

class CpuModel : public PreparedModel {
 public:
  CpuModel(const ModelConfig& cfg, std::shared_ptr<const HostWeights> weights);
  const ModelConfig& config() const override { return cfg_; }
  // Read on the JS thread while a pass may grow the arena: a snapshot, not a synchronised value.
  size_t activationBytes() const override { return arenaBytes_.load(std::memory_order_relaxed); }
  void forward(const ForwardRequest& req, ForwardResult& out) override;

 private:
  // Images [first, first + count) of the request, results written into `out` at their place.
  void runChunk(const ForwardRequest& req, int first, int count, ForwardResult& out);
  // Activations are carved from one grow-only block kept between passes: fresh buffers per
  // pass cost page faults and zeroing on every call. One pass at a time uses it (the pool's
  // pass lock). Batches run in chunks that fit kArenaBudget, so a huge batch does not leave
  // a huge arena behind.
  float* arena(size_t floats);

  ModelConfig cfg_;
  std::shared_ptr<const HostWeights> weights_;
  PageBuffer arena_;
  std::atomic<size_t> arenaBytes_{0};
  // Top-k indices and token origins, grow-only like the arena, under the same lock.
  std::vector<int32_t> idx_, origins_, nextOrigins_;
};

}  // namespace evit::cpu
