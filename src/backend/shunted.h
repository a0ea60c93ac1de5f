// The Shunted Transformer family (Ren et al., CVPR 2022; the authors' SSA.py): its
// configuration, the binding's check of it, and the tensors it reads. tools/reference/SHUNTED.md
// describes the model.
#pragma once

#include <array>
#include <string>
#include <vector>

#include "backend.h"
#include "host_weights.h"

namespace evit {

inline constexpr int kShuntedStages = 4;

struct ShuntedStage {
  int dim = 0;        // token width C
  int depth = 0;      // blocks
  int heads = 0;      // attention heads; even where srRatio > 1 (two head groups)
  int srRatio = 0;    // 1 (plain attention) or even: the groups aggregate keys at srRatio and srRatio / 2
  int mlpHidden = 0;  // MLP hidden width F
};

struct ShuntedConfig {
  std::array<ShuntedStage, kShuntedStages> stages{};
  int numConv = 0;     // extra 3×3 conv + BN + ReLU layers in the stem
  int inChans = 3;
  int stemWidth = 64;  // channels of the stem convolutions
  int imgH = 0, imgW = 0;
  int numClasses = 0;
  // LayerNorm eps: nn.LayerNorm's default in the stem, the patch embeddings and after the sr
  // convolutions; the model's norm_layer in the blocks' pre-norms and the stage norms.
  float embedEps = 1e-5f;
  float srEps = 1e-5f;
  float blockEps = 1e-6f;

  int totalDepth() const {
    int n = 0;
    for (const ShuntedStage& s : stages) n += s.depth;
    return n;
  }
};

// Token grid of one stage.
struct StageGrid {
  int h = 0, w = 0;
  int tokens() const { return h * w; }
};

// Output size of a convolution along one dimension (0 when the kernel does not fit).
inline int convOutSize(int in, int k, int stride, int pad) {
  return in + 2 * pad < k ? 0 : (in + 2 * pad - k) / stride + 1;
}

// The 7×7 stride-2 stem conv's output grid (before the 2×2 stride-2 conv).
inline StageGrid shuntedStemGrid(const ShuntedConfig& c) {
  return {convOutSize(c.imgH, 7, 2, 3), convOutSize(c.imgW, 7, 2, 3)};
}

// Each stage's token grid for the config's input size: the stem's 2×2/2 conv, then a 3×3/2
// conv with padding 1 before each later stage.
inline std::array<StageGrid, kShuntedStages> shuntedStageGrids(const ShuntedConfig& c) {
  std::array<StageGrid, kShuntedStages> g;
  const StageGrid stem = shuntedStemGrid(c);
  g[0] = {convOutSize(stem.h, 2, 2, 0), convOutSize(stem.w, 2, 2, 0)};
  for (int s = 1; s < kShuntedStages; ++s)
    g[s] = {convOutSize(g[s - 1].h, 3, 2, 1), convOutSize(g[s - 1].w, 3, 2, 1)};
  return g;
}

// Every field in range, heads dividing the widths and even where the heads split, and every
// stage's grid divisible by its sr ratio; throws ArgumentError naming the field.
void validateShuntedConfig(const ShuntedConfig& c);

// A Shunted Transformer drops nothing: a request's plan must be empty (ArgumentError otherwise);
// ForwardRequest::tokens is then empty too. Both backends' validatePlan.
std::vector<int> validateShuntedPlan(const std::vector<BlockPlan>& plan);

// Every tensor the forward pass reads, in the authors' names and state-dict order, except that
// each stem BatchNorm arrives folded into its convolution: `patch_embed1.conv.{0,3,..}.weight`
// plus a `.bias`, and no BatchNorm tensors. Convolution weights in torch layout [Cout, Cin/groups, k, k].
std::vector<TensorSpec> shuntedTensorSpecs(const ShuntedConfig& c);

// Per-op times of one pass, in milliseconds: the model's slots, then kShuntedBlockSlots per
// block (all stages' blocks in order).
enum ShuntedModelSlot { kShuntedStem, kShuntedPatchEmbed, kShuntedStageNorm, kShuntedHead, kShuntedModelSlots };
enum ShuntedBlockSlot {
  kShuntedNorm1,
  kShuntedQ,
  kShuntedKv,  // sr convs, their norms and GELU, the kv GEMMs and the local convs
  kShuntedAttention,
  kShuntedProj,
  kShuntedNorm2,
  kShuntedFc1,
  kShuntedDwconv,
  kShuntedFc2,
  kShuntedBlockSlots
};
inline constexpr const char* kShuntedModelSlotNames[kShuntedModelSlots] = {"stem", "patchEmbed", "stageNorm",
                                                                          "head"};
inline constexpr const char* kShuntedBlockSlotNames[kShuntedBlockSlots] = {
    "norm1", "q", "kv", "attention", "proj", "norm2", "fc1", "dwconv", "fc2"};
inline size_t shuntedProfileSize(int totalDepth) {
  return kShuntedModelSlots + (size_t)totalDepth * kShuntedBlockSlots;
}
inline size_t shuntedProfileSlot(int block, ShuntedBlockSlot s) {
  return kShuntedModelSlots + (size_t)block * kShuntedBlockSlots + s;
}

}  // namespace evit
