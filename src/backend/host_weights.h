// The model's weights copied once into one aligned host block, with typed views.
// Every backend is prepared from this.
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include "backend.h"
#include "page_buffer.h"

namespace evit {

struct TensorSpec {
  std::string name;
  size_t numel;
};

// Every tensor a model with this config needs, with its element count (SPEC §2 names).
std::vector<TensorSpec> tensorSpecs(const ModelConfig& cfg);

struct HostTensor {
  const float* data;
  size_t numel;
};

class HostWeights {
 public:
  // cfg has passed validateConfig. lookup(name) returns the caller's tensor or {nullptr, 0} when
  // absent; throws ArgumentError naming the first missing tensor or the first one whose size
  // differs from the spec, so the copy never reads past a caller's array.
  HostWeights(const ModelConfig& cfg, const std::function<HostTensor(const std::string&)>& lookup);
  ~HostWeights();
  HostWeights(const HostWeights&) = delete;
  HostWeights& operator=(const HostWeights&) = delete;

  const WeightViews& views() const { return views_; }
  size_t bytes() const { return floats_ * sizeof(float); }

 private:
  PageBuffer storage_;  // page-aligned, so every tensor offset of 16 floats is 64-byte aligned
  size_t floats_ = 0;
  WeightViews views_{};
};

}  // namespace evit
