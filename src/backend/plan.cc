#include <stdexcept>
#include <string>

#include "backend.h"

namespace evit {

void validateConfig(const ModelConfig& c) {
  // Upper bounds keep every size the backends compute (rows · width, weights) far from overflow.
  auto inRange = [](const char* name, int v, int hi) {
    if (v < 1 || v > hi)
      throw ArgumentError(std::string("config.") + name + " must be an integer in [1, " + std::to_string(hi) +
                          "], got " + std::to_string(v));
  };
  inRange("embedDim", c.embedDim, 65536);
  inRange("depth", c.depth, 1024);
  inRange("numHeads", c.numHeads, 65536);
  inRange("patchSize", c.patchSize, 1024);
  inRange("inChans", c.inChans, 64);
  inRange("gridH", c.gridH, 65536);
  inRange("gridW", c.gridW, 65536);
  inRange("numClasses", c.numClasses, 1000000);
  inRange("mlpHidden", c.mlpHidden, 262144);
  if (c.embedDim % c.numHeads != 0)
    throw ArgumentError("config.numHeads (" + std::to_string(c.numHeads) + ") does not divide embedDim (" +
                        std::to_string(c.embedDim) + ")");
  if ((long)c.gridH * c.gridW > Limits::kMaxPatches)
    throw ArgumentError("config.gridH × gridW must be at most " + std::to_string(Limits::kMaxPatches) +
                        " patches, got " + std::to_string((long)c.gridH * c.gridW));
  if (!(c.eps > 0.0f)) throw ArgumentError("config.eps must be positive");
}

std::vector<int> validatePlan(const ModelConfig& cfg, const std::vector<BlockPlan>& plan) {
  if ((int)plan.size() != cfg.depth)
    throw ArgumentError("plan has " + std::to_string(plan.size()) + " entries, expected one per block (" +
                        std::to_string(cfg.depth) + ")");
  std::vector<int> n(cfg.depth + 1);
  n[0] = 1 + cfg.numPatches();
  for (int i = 0; i < cfg.depth; ++i) {
    const BlockPlan& p = plan[i];
    int N = n[i];
    if (p.keep < 0) {
      n[i + 1] = N;
      continue;
    }
    if (p.keep < 1 || p.keep >= N - 1)
      throw ArgumentError("block " + std::to_string(i) + " keeps " + std::to_string(p.keep) + " of " +
                          std::to_string(N - 1) + " tokens; a reorganising block must keep between 1 and " +
                          std::to_string(N - 2));
    n[i + 1] = 1 + p.keep + (p.fuse ? 1 : 0);
  }
  return n;
}

const ModelConfig& PreparedModel::config() const {
  throw std::logic_error("config() describes a DeiT/EViT model; this model is of another family");
}

}  // namespace evit
