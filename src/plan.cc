#include <string>

#include "backend.h"

namespace evit {

void validateConfig(const ModelConfig& c) {
  auto positive = [](const char* name, int v) {
    if (v <= 0) throw ArgumentError(std::string("config.") + name + " must be a positive integer, got " + std::to_string(v));
  };
  positive("embedDim", c.embedDim);
  positive("depth", c.depth);
  positive("numHeads", c.numHeads);
  positive("patchSize", c.patchSize);
  positive("inChans", c.inChans);
  positive("gridH", c.gridH);
  positive("gridW", c.gridW);
  positive("numClasses", c.numClasses);
  positive("mlpHidden", c.mlpHidden);
  if (c.embedDim % c.numHeads != 0)
    throw ArgumentError("config.numHeads (" + std::to_string(c.numHeads) + ") does not divide embedDim (" +
                        std::to_string(c.embedDim) + ")");
  if (!(c.eps > 0.0f)) throw ArgumentError("config.eps must be positive");
  // Keeps every buffer size below 2^31 elements for a batch of up to 4096.
  if (c.embedDim > 65536 || c.mlpHidden > 262144 || c.depth > 1024 || c.numPatches() > 65536 || c.patchSize > 1024 ||
      c.inChans > 64 || c.numClasses > 1000000)
    throw ArgumentError("config values are out of the supported range");
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

}  // namespace evit
