// The model's weights copied once into one aligned host block, found by name (any family) or
// through the DeiT family's typed views. Every backend is prepared from this.
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <unordered_map>
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

// Returns the caller's tensor of that name, or {nullptr, 0} when it has none.
using TensorLookup = std::function<HostTensor(const std::string&)>;

class HostWeights {
 public:
  // Copies every tensor of `specs` (names unique). Throws ArgumentError naming the first
  // missing tensor or the first one whose size differs from its spec, so the copy never reads
  // past a caller's array. Tensors the caller has beyond the list are not read.
  HostWeights(const std::vector<TensorSpec>& specs, const TensorLookup& lookup);
  // DeiT/EViT: the tensors of tensorSpecs(cfg), with views(). cfg has passed validateConfig.
  HostWeights(const ModelConfig& cfg, const TensorLookup& lookup);
  ~HostWeights();
  HostWeights(const HostWeights&) = delete;
  HostWeights& operator=(const HostWeights&) = delete;

  // The copy of the spec list's tensor `name` (64-byte aligned); throws std::out_of_range for a
  // name not in the list.
  const float* tensor(const std::string& name) const;
  // The same, writable: for a backend that relays a tensor out in place while it prepares the
  // model from weights it alone holds (no second copy of them).
  float* mutableTensor(const std::string& name);
  // The DeiT views; throws std::logic_error when built from a spec list rather than a ModelConfig.
  const WeightViews& views() const;
  size_t bytes() const { return floats_ * sizeof(float); }

 private:
  PageBuffer storage_;  // page-aligned, so every tensor offset of 16 floats is 64-byte aligned
  size_t floats_ = 0;
  std::unordered_map<std::string, const float*> byName_;
  bool deit_ = false;
  WeightViews views_{};
};

}  // namespace evit
