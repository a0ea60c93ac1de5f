#include "cpu_model.h"

#include <algorithm>
#include <cassert>
#include <chrono>
#include <mutex>
#include <utility>

#include "ops.h"
#include "thread_pool.h"

namespace evit::cpu {

CpuModel::CpuModel(const ModelConfig& cfg, std::shared_ptr<const HostWeights> weights)
    : cfg_(cfg), weights_(std::move(weights)) {}

namespace {

// Each buffer starts on a 64-byte boundary: sizes are rounded up to 16 floats.
size_t round16(size_t v) { return (v + 15) / 16 * 16; }

// The arena's buffers for `images` images: x, normed (also the patch embeddings), qkv (also the
// patchified image), attn, hidden, scores, head input.
std::vector<size_t> bufferSizes(const ModelConfig& c, int n0, size_t images) {
  const size_t rows = images * n0, patchK = (size_t)c.inChans * c.patchSize * c.patchSize;
  return {round16(rows * c.embedDim),
          round16(rows * c.embedDim),
          round16(std::max(rows * 3 * c.embedDim, images * c.numPatches() * patchK)),
          round16(rows * c.embedDim),
          round16(rows * c.mlpHidden),
          round16(images * (n0 - 1)),
          round16(images * c.embedDim)};
}

size_t totalFloats(const std::vector<size_t>& sizes) {
  size_t total = 0;
  for (size_t s : sizes) total += s;
  return total;
}

}  // namespace

void CpuModel::forward(const ForwardRequest& req, ForwardResult& out) {
  const ModelConfig& c = cfg_;
  assert((req.images || (req.pixels && req.pixelLut)) && req.batch >= 1 && req.tokens.size() == (size_t)c.depth + 1);
  ThreadPool& tp = pool();
  std::lock_guard<std::mutex> pass(tp.passMutex());

  const int B = req.batch;
  const size_t perImage = totalFloats(bufferSizes(c, req.tokens[0], 1)) * sizeof(float);
  const int chunk = ActivationArena::chunkImages(perImage, B);
  out.logits.assign((size_t)B * c.numClasses, 0.0f);
  out.kept.clear();
  for (int i = 0; i < c.depth; ++i) {
    const BlockPlan& p = req.plan[i];
    if (p.keep >= 0) out.kept.push_back({i, p.keep + (p.fuse ? 1 : 0), std::vector<int32_t>()});
  }
  for (KeptTokens& k : out.kept) k.origins.resize((size_t)B * k.perImage);
  out.profile.assign(req.profile ? profileSize(c.depth) : 0, 0.0);
  for (int first = 0; first < B; first += chunk) runChunk(req, first, std::min(chunk, B - first), out);
}

void CpuModel::runChunk(const ForwardRequest& req, int first, int count, ForwardResult& out) {
  const ModelConfig& c = cfg_;
  const WeightViews& w = weights_->views();
  const std::vector<int>& n = req.tokens;
  const int B = count, C = c.embedDim, H = c.numHeads, d = c.headDim(), P = c.numPatches();
  const size_t patchK = (size_t)c.inChans * c.patchSize * c.patchSize;
  const std::vector<size_t> sizes = bufferSizes(c, n[0], (size_t)B);
  float* at = arena_.reserve(totalFloats(sizes));
  auto take = [&](size_t i) {
    float* p = at;
    at += sizes[i];
    return p;
  };
  float *x = take(0), *normed = take(1), *qkv = take(2), *attn = take(3), *hidden = take(4), *scores = take(5),
        *headIn = take(6);
  idx_.resize((size_t)B * (n[0] - 1));
  origins_.resize((size_t)B * P);
  nextOrigins_.resize((size_t)B * P);
  for (int b = 0; b < B; ++b)
    for (int p = 0; p < P; ++p) origins_[(size_t)b * P + p] = p;
  int32_t* originsIn = origins_.data();
  int32_t* originsOut = nextOrigins_.data();
  const size_t imageOffset = (size_t)first * c.inChans * c.imgH() * c.imgW();

  // Lap timer for the profile: each call charges the time since the previous one to a slot.
  auto last = std::chrono::steady_clock::now();
  auto lap = [&](size_t slot) {
    if (!req.profile) return;
    const auto now = std::chrono::steady_clock::now();
    out.profile[slot] += std::chrono::duration<double, std::milli>(now - last).count();
    last = now;
  };

  // Patch embedding: the conv as a GEMM over patchified columns, then class token and position
  // embedding assemble the token stream.
  if (req.pixels)
    patchifyPixels(qkv, req.pixels + imageOffset, req.pixelLut, B, c.inChans, c.gridH, c.gridW, c.patchSize);
  else
    patchify(qkv, req.images + imageOffset, B, c.inChans, c.gridH, c.gridW, c.patchSize);
  linear(normed, qkv, w.patchW, w.patchB, B * P, C, (int)patchK, Epilogue::Bias);
  assembleTokens(x, normed, w.clsToken, w.posEmbed, B, P, C);
  lap(kPatchEmbed);

  auto kept = out.kept.begin();
  for (int i = 0; i < c.depth; ++i) {
    const BlockWeights& bw = w.blocks[i];
    const BlockPlan& p = req.plan[i];
    const int N = n[i];
    int rows = B * N;
    const bool drop = p.keep >= 0;
    layerNorm(normed, x, C, bw.norm1W, bw.norm1B, rows, C, c.eps);
    lap(profileSlot(i, kLn1));
    linear(qkv, normed, bw.qkvW, bw.qkvB, rows, 3 * C, C, Epilogue::Bias);
    lap(profileSlot(i, kQkv));
    clsAttention(attn, drop ? scores : nullptr, qkv, B, N, H, d);
    lap(profileSlot(i, kAttention));
    linear(x, attn, bw.projW, bw.projB, rows, C, C, Epilogue::BiasResidual);
    lap(profileSlot(i, kProj));
    if (drop) {
      const int perImage = p.keep + (p.fuse ? 1 : 0);
      topk(idx_.data(), scores, B, N - 1, p.keep);
      // attn is dead after proj and still in cache from it: gather into it, then swap, so the
      // copy does not fetch cold lines for ownership.
      gatherFuse(attn, originsOut, x, scores, idx_.data(), originsIn, B, N, C, p.keep, p.fuse, -1 - i);
      std::swap(x, attn);
      std::swap(originsIn, originsOut);
      std::copy_n(originsIn, (size_t)B * perImage, (kept++)->origins.begin() + (size_t)first * perImage);
      rows = B * n[i + 1];
      lap(profileSlot(i, kReorganise));
    }
    layerNorm(normed, x, C, bw.norm2W, bw.norm2B, rows, C, c.eps);
    lap(profileSlot(i, kLn2));
    linear(hidden, normed, bw.fc1W, bw.fc1B, rows, c.mlpHidden, C, Epilogue::BiasGelu);
    lap(profileSlot(i, kFc1));
    linear(x, hidden, bw.fc2W, bw.fc2B, rows, C, c.mlpHidden, Epilogue::BiasResidual);
    lap(profileSlot(i, kFc2));
  }

  // Head: LayerNorm of each image's class token (row stride N * C), then the classifier.
  const long finalStride = (long)n[c.depth] * C;
  layerNorm(headIn, x, finalStride, w.normW, w.normB, B, C, c.eps);
  linear(out.logits.data() + (size_t)first * c.numClasses, headIn, w.headW, w.headB, B, c.numClasses, C,
         Epilogue::Bias);
  lap(kHead);
}

}  // namespace evit::cpu
