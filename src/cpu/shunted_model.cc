#include "shunted_model.h"

#include <algorithm>
#include <cassert>
#include <chrono>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "ops.h"
#include "thread_pool.h"

namespace evit::cpu {

namespace {

// Shunted-T at 224 px needs 16 MiB of activations an image: chunks of four (ActivationArena).
size_t round16(size_t v) { return (v + 15) / 16 * 16; }

enum Buffer { kX, kNormed, kQ, kO, kAgg, kKv, kV, kU, kH, kFeat, kBuffers };

// Floats of each arena buffer for one image: the largest any stage needs.
std::vector<size_t> bufferSizes(const ShuntedConfig& c, const StageGrid& stem,
                                const std::array<StageGrid, kShuntedStages>& g) {
  std::vector<size_t> n(kBuffers, 0);
  auto grow = [&](Buffer b, size_t v) { n[b] = std::max(n[b], v); };
  // The stem's convolutions ping-pong between u and h; its last conv writes normed.
  grow(kU, (size_t)stem.tokens() * c.stemWidth);
  grow(kH, (size_t)stem.tokens() * c.stemWidth);
  for (int s = 0; s < kShuntedStages; ++s) {
    const size_t N = g[s].tokens(), C = c.stages[s].dim, F = c.stages[s].mlpHidden;
    const int r = c.stages[s].srRatio;
    for (Buffer b : {kX, kNormed, kQ, kO}) grow(b, N * C);
    grow(kU, N * F);
    grow(kH, N * F);
    if (r == 1) {
      grow(kKv, 2 * N * C);
    } else {
      for (int rho : {r, r / 2}) {
        const size_t M = (size_t)(g[s].h / rho) * (g[s].w / rho);
        grow(kAgg, M * C);
        grow(kKv, M * C);
        grow(kV, M * C / 2);
      }
    }
  }
  grow(kFeat, c.stages[3].dim);
  for (size_t& v : n) v = round16(v);
  return n;
}

size_t totalFloats(const std::vector<size_t>& sizes, size_t images) {
  size_t total = 0;
  for (size_t s : sizes) total += s * images;
  return total;
}

}  // namespace

CpuShuntedModel::CpuShuntedModel(const ShuntedConfig& cfg, std::shared_ptr<HostWeights> weights)
    : cfg_(cfg), stemGrid_(shuntedStemGrid(cfg)), grids_(shuntedStageGrids(cfg)) {
  HostWeights& w = *weights;
  auto affine = [&](const std::string& name) { return Affine{w.tensor(name + ".weight"), w.tensor(name + ".bias")}; };
  // Each conv's and depthwise conv's weight permuted in place, through one scratch copy.
  std::vector<float> scratch;
  auto relaid = [&](const std::string& name, size_t n, auto permute) {
    float* p = w.mutableTensor(name + ".weight");
    scratch.assign(p, p + n);
    permute(p, scratch.data());
    return Affine{p, w.tensor(name + ".bias")};
  };
  auto conv = [&](const std::string& name, int cout, int cin, int k) {
    return relaid(name, (size_t)cout * cin * k * k,
                  [&](float* dst, const float* src) { convWeightToHwc(dst, src, cout, cin, k); });
  };
  auto depthwise = [&](const std::string& name, int C) {
    return relaid(name, (size_t)9 * C, [&](float* dst, const float* src) { depthwiseWeightToTaps(dst, src, C); });
  };

  blocks_.resize(kShuntedStages);
  const int S = cfg_.stemWidth;
  stem_.push_back(conv("patch_embed1.conv.0", S, cfg_.inChans, 7));
  for (int j = 0; j < cfg_.numConv; ++j) stem_.push_back(conv("patch_embed1.conv." + std::to_string(3 + 3 * j), S, S, 3));
  stem_.push_back(conv("patch_embed1.conv." + std::to_string(3 + 3 * cfg_.numConv), cfg_.stages[0].dim, S, 2));
  stemNorm_ = affine("patch_embed1.norm");
  for (int s = 0; s < kShuntedStages; ++s) {
    const ShuntedStage& st = cfg_.stages[s];
    const int C = st.dim, r = st.srRatio;
    const std::string n = std::to_string(s + 1);
    if (s > 0) {
      patch_[s] = conv("patch_embed" + n + ".proj", C, cfg_.stages[s - 1].dim, 3);
      patchNorm_[s] = affine("patch_embed" + n + ".norm");
    }
    for (int j = 0; j < st.depth; ++j) {
      const std::string p = "block" + n + "." + std::to_string(j) + ".";
      Block b;
      b.norm1 = affine(p + "norm1");
      b.q = affine(p + "attn.q");
      b.proj = affine(p + "attn.proj");
      if (r > 1) {
        for (int t = 0; t < 2; ++t) {
          const std::string i = std::to_string(t + 1);
          b.sr[t] = conv(p + "attn.sr" + i, C, C, t == 0 ? r : r / 2);
          b.srNorm[t] = affine(p + "attn.norm" + i);
          b.kv[t] = affine(p + "attn.kv" + i);
          b.local[t] = depthwise(p + "attn.local_conv" + i, C / 2);
        }
      } else {
        b.kvAll = affine(p + "attn.kv");
        b.localAll = depthwise(p + "attn.local_conv", C);
      }
      b.norm2 = affine(p + "norm2");
      b.fc1 = affine(p + "mlp.fc1");
      b.dwconv = depthwise(p + "mlp.dwconv.dwconv", st.mlpHidden);
      b.fc2 = affine(p + "mlp.fc2");
      blocks_[s].push_back(b);
    }
    stageNorm_[s] = affine("norm" + n);
  }
  head_ = affine("head");
  bufferFloats_ = bufferSizes(cfg_, stemGrid_, grids_);
  weights_ = std::move(weights);
}

void CpuShuntedModel::forward(const ForwardRequest& req, ForwardResult& out) {
  assert(req.images && req.batch >= 1 && req.plan.empty());
  ThreadPool& tp = pool();
  std::lock_guard<std::mutex> pass(tp.passMutex());
  const int B = req.batch;
  const size_t perImage = totalFloats(bufferFloats_, 1) * sizeof(float);
  const int chunk = ActivationArena::chunkImages(perImage, B);
  out.logits.assign((size_t)B * cfg_.numClasses, 0.0f);
  out.kept.clear();
  out.profile.assign(req.profile ? shuntedProfileSize(cfg_.totalDepth()) : 0, 0.0);
  for (int first = 0; first < B; first += chunk) runChunk(req, first, std::min(chunk, B - first), out);
}

void CpuShuntedModel::runChunk(const ForwardRequest& req, int first, int count, ForwardResult& out) {
  const ShuntedConfig& c = cfg_;
  const int B = count;
  float* at = arena_.reserve(totalFloats(bufferFloats_, B));
  float* buf[kBuffers];
  for (int i = 0; i < kBuffers; ++i) {
    buf[i] = at;
    at += bufferFloats_[i] * B;
  }
  float *x = buf[kX], *normed = buf[kNormed], *q = buf[kQ], *o = buf[kO], *agg = buf[kAgg], *kv = buf[kKv],
        *v = buf[kV], *u = buf[kU], *h = buf[kH];
  const float* images = req.images + (size_t)first * c.inChans * c.imgH * c.imgW;

  // Lap timer for the profile: each call charges the time since the previous one to a slot.
  auto last = std::chrono::steady_clock::now();
  auto lap = [&](size_t slot) {
    if (!req.profile) return;
    const auto now = std::chrono::steady_clock::now();
    out.profile[slot] += std::chrono::duration<double, std::milli>(now - last).count();
    last = now;
  };

  // Stem: 7×7/2 conv + ReLU on the NCHW image, numConv × (3×3 conv + ReLU), 2×2/2 conv, LN;
  // the BatchNorms arrived folded into the convs.
  const int S = c.stemWidth, sh = stemGrid_.h, sw = stemGrid_.w;
  conv2d(u, images, ImageLayout::NCHW, stem_[0].w, stem_[0].b, B, c.imgH, c.imgW, c.inChans, S, 7, 2, 3,
         Epilogue::BiasRelu);
  for (int j = 1; j <= c.numConv; ++j) {
    conv2d(h, u, ImageLayout::NHWC, stem_[j].w, stem_[j].b, B, sh, sw, S, S, 3, 1, 1, Epilogue::BiasRelu);
    std::swap(u, h);
  }
  const Affine& lastConv = stem_.back();
  conv2d(normed, u, ImageLayout::NHWC, lastConv.w, lastConv.b, B, sh, sw, S, c.stages[0].dim, 2, 2, 0, Epilogue::Bias);
  layerNorm(x, normed, c.stages[0].dim, stemNorm_.w, stemNorm_.b, B * grids_[0].tokens(), c.stages[0].dim, c.embedEps);
  lap(kShuntedStem);

  int block = 0;
  for (int s = 0; s < kShuntedStages; ++s) {
    const ShuntedStage& st = c.stages[s];
    const int C = st.dim, F = st.mlpHidden, r = st.srRatio, H = grids_[s].h, W = grids_[s].w, N = H * W;
    const int rows = B * N, d = C / st.heads;
    if (s > 0) {
      // OverlapPatchEmbed: 3×3/2 conv of the previous stage's tokens read as an NHWC image, LN.
      const int Cp = c.stages[s - 1].dim;
      conv2d(normed, x, ImageLayout::NHWC, patch_[s].w, patch_[s].b, B, grids_[s - 1].h, grids_[s - 1].w, Cp, C, 3, 2,
             1, Epilogue::Bias);
      layerNorm(x, normed, C, patchNorm_[s].w, patchNorm_[s].b, rows, C, c.embedEps);
      lap(kShuntedPatchEmbed);
    }
    for (const Block& b : blocks_[s]) {
      layerNorm(normed, x, C, b.norm1.w, b.norm1.b, rows, C, c.blockEps);
      lap(shuntedProfileSlot(block, kShuntedNorm1));
      linear(q, normed, b.q.w, b.q.b, rows, C, C, Epilogue::Bias);
      lap(shuntedProfileSlot(block, kShuntedQ));
      if (r > 1) {
        // Two head groups: heads [0, g) attend to keys aggregated at rate r, [g, 2g) at r/2; each
        // group reads and writes its own half of the channels of q and o.
        const int g = st.heads / 2, half = C / 2;
        for (int t = 0; t < 2; ++t) {
          const int rho = t == 0 ? r : r / 2, mh = H / rho, mw = W / rho, M = mh * mw;
          conv2d(agg, normed, ImageLayout::NHWC, b.sr[t].w, b.sr[t].b, B, H, W, C, C, rho, rho, 0, Epilogue::Bias);
          layerNorm(agg, agg, C, b.srNorm[t].w, b.srNorm[t].b, B * M, C, c.srEps);
          gelu(agg, (long)B * M * C);
          linear(kv, agg, b.kv[t].w, b.kv[t].b, B * M, C, C, Epilogue::Bias);
          // v += local_conv(v), over the aggregated grid, before attention.
          depthwise3x3(v, kv + half, C, kv + half, C, b.local[t].w, b.local[t].b, B, mh, mw, half, false);
          lap(shuntedProfileSlot(block, kShuntedKv));
          groupAttention(o + t * half, C, q + t * half, C, kv, C, v, half, B, N, M, g, d);
          lap(shuntedProfileSlot(block, kShuntedAttention));
        }
      } else {
        linear(kv, normed, b.kvAll.w, b.kvAll.b, rows, 2 * C, C, Epilogue::Bias);
        lap(shuntedProfileSlot(block, kShuntedKv));
        groupAttention(o, C, q, C, kv, 2 * C, kv + C, 2 * C, B, N, N, st.heads, d);
        // o += local_conv(v): after attention where sr = 1.
        depthwise3x3(o, kv + C, 2 * C, o, C, b.localAll.w, b.localAll.b, B, H, W, C, false);
        lap(shuntedProfileSlot(block, kShuntedAttention));
      }
      linear(x, o, b.proj.w, b.proj.b, rows, C, C, Epilogue::BiasResidual);
      lap(shuntedProfileSlot(block, kShuntedProj));
      layerNorm(normed, x, C, b.norm2.w, b.norm2.b, rows, C, c.blockEps);
      lap(shuntedProfileSlot(block, kShuntedNorm2));
      linear(u, normed, b.fc1.w, b.fc1.b, rows, F, C, Epilogue::Bias);
      lap(shuntedProfileSlot(block, kShuntedFc1));
      depthwise3x3(h, u, F, u, F, b.dwconv.w, b.dwconv.b, B, H, W, F, true);
      lap(shuntedProfileSlot(block, kShuntedDwconv));
      linear(x, h, b.fc2.w, b.fc2.b, rows, C, F, Epilogue::BiasResidual);
      lap(shuntedProfileSlot(block, kShuntedFc2));
      ++block;
    }
    layerNorm(x, x, C, stageNorm_[s].w, stageNorm_[s].b, rows, C, c.blockEps);
    lap(kShuntedStageNorm);
  }

  const int C4 = c.stages[3].dim;
  meanTokens(buf[kFeat], x, B, grids_[3].tokens(), C4);
  linear(out.logits.data() + (size_t)first * c.numClasses, buf[kFeat], head_.w, head_.b, B, c.numClasses, C4,
         Epilogue::Bias);
  lap(kShuntedHead);
}

}  // namespace evit::cpu
