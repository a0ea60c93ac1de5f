#include "shunted.h"

#include <string>

namespace evit {

namespace {

std::string stageField(int s, const char* field) {
  return "config.stages[" + std::to_string(s) + "]." + field;
}

}  // namespace

void validateShuntedConfig(const ShuntedConfig& c) {
  // Upper bounds keep every size the backends compute far from overflow.
  auto inRange = [](const std::string& name, int v, int lo, int hi) {
    if (v < lo || v > hi)
      throw ArgumentError(name + " must be an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                          "], got " + std::to_string(v));
  };
  inRange("config.numConv", c.numConv, 0, 64);
  inRange("config.inChans", c.inChans, 1, 64);
  inRange("config.stemWidth", c.stemWidth, 1, 4096);
  inRange("config.imgH", c.imgH, 1, 4096);
  inRange("config.imgW", c.imgW, 1, 4096);
  inRange("config.numClasses", c.numClasses, 1, 1000000);
  for (int s = 0; s < kShuntedStages; ++s) {
    const ShuntedStage& st = c.stages[s];
    inRange(stageField(s, "dim"), st.dim, 1, 16384);
    inRange(stageField(s, "depth"), st.depth, 1, 1024);
    inRange(stageField(s, "heads"), st.heads, 1, st.dim);
    inRange(stageField(s, "srRatio"), st.srRatio, 1, 64);
    inRange(stageField(s, "mlpHidden"), st.mlpHidden, 1, 262144);
    if (st.srRatio > 1 && st.srRatio % 2 != 0)
      throw ArgumentError(stageField(s, "srRatio") + " must be 1 or even (the second head group aggregates at half " +
                          "the rate), got " + std::to_string(st.srRatio));
    if (st.dim % st.heads != 0)
      throw ArgumentError(stageField(s, "heads") + " (" + std::to_string(st.heads) + ") does not divide dim (" +
                          std::to_string(st.dim) + ")");
    if (st.srRatio > 1 && st.heads % 2 != 0)
      throw ArgumentError(stageField(s, "heads") + " (" + std::to_string(st.heads) +
                          ") must be even where srRatio > 1: the heads split in two groups");
  }
  if (!(c.embedEps > 0.0f) || !(c.srEps > 0.0f) || !(c.blockEps > 0.0f))
    throw ArgumentError("config: every LayerNorm eps must be positive");
  const auto grids = shuntedStageGrids(c);
  for (int s = 0; s < kShuntedStages; ++s) {
    const StageGrid& g = grids[s];
    const int r = c.stages[s].srRatio;
    if (g.h < 1 || g.w < 1 || g.h % r != 0 || g.w % r != 0)
      throw ArgumentError("input " + std::to_string(c.imgH) + "×" + std::to_string(c.imgW) + " gives stage " +
                          std::to_string(s + 1) + " a " + std::to_string(g.h) + "×" + std::to_string(g.w) +
                          " token grid, which its sr ratio " + std::to_string(r) + " does not divide");
  }
}

std::vector<int> validateShuntedPlan(const std::vector<BlockPlan>& plan) {
  if (!plan.empty())
    throw ArgumentError("plan has " + std::to_string(plan.size()) +
                        " entries; a Shunted Transformer drops no tokens, so keep and fuse must be empty");
  return {};
}

std::vector<TensorSpec> shuntedTensorSpecs(const ShuntedConfig& c) {
  std::vector<TensorSpec> s;
  auto add = [&](const std::string& name, size_t n) { s.push_back({name, n}); };
  auto affine = [&](const std::string& name, size_t w, size_t n) {
    add(name + ".weight", w);
    add(name + ".bias", n);
  };
  const size_t S = c.stemWidth;
  affine("patch_embed1.conv.0", S * c.inChans * 49, S);
  for (int j = 0; j < c.numConv; ++j) affine("patch_embed1.conv." + std::to_string(3 + 3 * j), S * S * 9, S);
  const size_t C1 = c.stages[0].dim;
  affine("patch_embed1.conv." + std::to_string(3 + 3 * c.numConv), C1 * S * 4, C1);
  affine("patch_embed1.norm", C1, C1);
  for (int st = 0; st < kShuntedStages; ++st) {
    const size_t C = c.stages[st].dim, F = c.stages[st].mlpHidden;
    const int r = c.stages[st].srRatio;
    const std::string n = std::to_string(st + 1);
    if (st > 0) {
      affine("patch_embed" + n + ".proj", C * c.stages[st - 1].dim * 9, C);
      affine("patch_embed" + n + ".norm", C, C);
    }
    for (int j = 0; j < c.stages[st].depth; ++j) {
      const std::string p = "block" + n + "." + std::to_string(j) + ".";
      affine(p + "norm1", C, C);
      affine(p + "attn.q", C * C, C);
      affine(p + "attn.proj", C * C, C);
      if (r > 1) {
        affine(p + "attn.sr1", C * C * r * r, C);
        affine(p + "attn.norm1", C, C);
        affine(p + "attn.sr2", C * C * (r / 2) * (r / 2), C);
        affine(p + "attn.norm2", C, C);
        affine(p + "attn.kv1", C * C, C);
        affine(p + "attn.kv2", C * C, C);
        affine(p + "attn.local_conv1", C / 2 * 9, C / 2);
        affine(p + "attn.local_conv2", C / 2 * 9, C / 2);
      } else {
        affine(p + "attn.kv", 2 * C * C, 2 * C);
        affine(p + "attn.local_conv", C * 9, C);
      }
      affine(p + "norm2", C, C);
      affine(p + "mlp.fc1", F * C, F);
      affine(p + "mlp.dwconv.dwconv", F * 9, F);
      affine(p + "mlp.fc2", C * F, C);
    }
    affine("norm" + n, C, C);
  }
  affine("head", (size_t)c.numClasses * c.stages[3].dim, c.numClasses);
  return s;
}

}  // namespace evit
