#include "host_weights.h"

#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>

namespace evit {

std::vector<TensorSpec> tensorSpecs(const ModelConfig& c) {
  const size_t C = c.embedDim, Hd = c.mlpHidden, P = c.numPatches();
  const size_t patchK = (size_t)c.inChans * c.patchSize * c.patchSize;
  std::vector<TensorSpec> s = {
      {"cls_token", C},
      {"pos_embed", (1 + P) * C},
      {"patch_embed.proj.weight", C * patchK},
      {"patch_embed.proj.bias", C},
  };
  for (int i = 0; i < c.depth; ++i) {
    const std::string b = "blocks." + std::to_string(i) + ".";
    s.push_back({b + "norm1.weight", C});
    s.push_back({b + "norm1.bias", C});
    s.push_back({b + "attn.qkv.weight", 3 * C * C});
    s.push_back({b + "attn.qkv.bias", 3 * C});
    s.push_back({b + "attn.proj.weight", C * C});
    s.push_back({b + "attn.proj.bias", C});
    s.push_back({b + "norm2.weight", C});
    s.push_back({b + "norm2.bias", C});
    s.push_back({b + "mlp.fc1.weight", Hd * C});
    s.push_back({b + "mlp.fc1.bias", Hd});
    s.push_back({b + "mlp.fc2.weight", C * Hd});
    s.push_back({b + "mlp.fc2.bias", C});
  }
  s.push_back({"norm.weight", C});
  s.push_back({"norm.bias", C});
  s.push_back({"head.weight", (size_t)c.numClasses * C});
  s.push_back({"head.bias", (size_t)c.numClasses});
  return s;
}

HostWeights::HostWeights(const std::vector<TensorSpec>& specs, const TensorLookup& lookup) {
  std::vector<HostTensor> src;
  src.reserve(specs.size());
  for (const auto& s : specs) {
    HostTensor t = lookup(s.name);
    if (!t.data) throw ArgumentError("missing tensor " + s.name);
    if (t.numel != s.numel)
      throw ArgumentError("tensor " + s.name + " has " + std::to_string(t.numel) + " elements, expected " +
                          std::to_string(s.numel));
    src.push_back(t);
  }
  // Each tensor starts on a 64-byte boundary so vector loads never split cache lines.
  const size_t align = 16;
  std::vector<size_t> offsets(specs.size());
  for (size_t i = 0; i < specs.size(); ++i) {
    offsets[i] = floats_;
    floats_ += (specs[i].numel + align - 1) / align * align;
  }
  storage_ = PageBuffer(floats_ * sizeof(float));
  float* base = storage_.as<float>();
  for (size_t i = 0; i < specs.size(); ++i) std::memcpy(base + offsets[i], src[i].data, src[i].numel * sizeof(float));
  for (size_t i = 0; i < specs.size(); ++i) byName_[specs[i].name] = base + offsets[i];
}

HostWeights::HostWeights(const ModelConfig& cfg, const TensorLookup& lookup) : HostWeights(tensorSpecs(cfg), lookup) {
  deit_ = true;
  auto at = [&](const std::string& name) { return tensor(name); };
  views_.clsToken = at("cls_token");
  views_.posEmbed = at("pos_embed");
  views_.patchW = at("patch_embed.proj.weight");
  views_.patchB = at("patch_embed.proj.bias");
  for (int i = 0; i < cfg.depth; ++i) {
    const std::string b = "blocks." + std::to_string(i) + ".";
    views_.blocks.push_back(BlockWeights{
        at(b + "norm1.weight"), at(b + "norm1.bias"), at(b + "attn.qkv.weight"), at(b + "attn.qkv.bias"),
        at(b + "attn.proj.weight"), at(b + "attn.proj.bias"), at(b + "norm2.weight"), at(b + "norm2.bias"),
        at(b + "mlp.fc1.weight"), at(b + "mlp.fc1.bias"), at(b + "mlp.fc2.weight"), at(b + "mlp.fc2.bias")});
  }
  views_.normW = at("norm.weight");
  views_.normB = at("norm.bias");
  views_.headW = at("head.weight");
  views_.headB = at("head.bias");
}

HostWeights::~HostWeights() = default;

const float* HostWeights::tensor(const std::string& name) const {
  auto it = byName_.find(name);
  if (it == byName_.end()) throw std::out_of_range("no tensor " + name + " in the model's weights");
  return it->second;
}

float* HostWeights::mutableTensor(const std::string& name) { return const_cast<float*>(tensor(name)); }

const WeightViews& HostWeights::views() const {
  if (!deit_) throw std::logic_error("views() are the DeiT family's; these weights were built from a spec list");
  return views_;
}

}  // namespace evit
