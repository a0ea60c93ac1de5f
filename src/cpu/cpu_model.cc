#include "cpu_model.h"

#include <algorithm>
#include <chrono>
#include <mutex>
#include <utility>

#include "ops.h"
#include "thread_pool.h"

namespace evit::cpu {

CpuModel::CpuModel(const ModelConfig& cfg, std::shared_ptr<const HostWeights> weights)
    : cfg_(cfg), weights_(std::move(weights)) {}

float* CpuModel::arena(size_t floats) {
  if (floats > arenaFloats_) {
    arena_.reset();  // free first: the old and new blocks need not coexist
    arena_.reset(new float[floats]);
    arenaFloats_ = floats;
  }
  return arena_.get();
}

void CpuModel::forward(const ForwardRequest& req, ForwardResult& out) {
  const ModelConfig& c = cfg_;
  const WeightViews& w = weights_->views();
  if (!req.images) throw ArgumentError("images pointer is null");
  if (req.batch < 1) throw ArgumentError("batch must be at least 1");
  const std::vector<int> n = validatePlan(c, req.plan);

  ThreadPool& tp = pool();
  std::lock_guard<std::mutex> pass(tp.passMutex());

  const int B = req.batch, C = c.embedDim, H = c.numHeads, d = c.headDim(), P = c.numPatches();
  const size_t maxRows = (size_t)B * n[0];
  const size_t patchK = (size_t)c.inChans * c.patchSize * c.patchSize;
  // Each buffer starts on a 64-byte boundary: sizes are rounded up to 16 floats.
  auto round16 = [](size_t v) { return (v + 15) / 16 * 16; };
  const size_t sizes[] = {
      round16(maxRows * C),                           // x
      round16(maxRows * C),                           // xn
      round16(maxRows * 3 * C),                       // qkv
      round16(maxRows * C),                           // attn
      round16(std::max(maxRows * c.mlpHidden,         // hidden, which also holds the
                       (size_t)B * P * (patchK + C))),  // patch embedding's scratch
      round16((size_t)B * (n[0] - 1)),                // scores
      round16((size_t)B * C),                         // class tokens for the head
  };
  size_t total = 0;
  for (size_t sz : sizes) total += sz;
  float* at = arena(total);
  auto take = [&](size_t i) {
    float* p = at;
    at += sizes[i];
    return p;
  };
  float *xp = take(0), *xnp = take(1), *qkvp = take(2), *attnp = take(3), *hiddenp = take(4), *scoresp = take(5),
        *clsp = take(6);
  idx_.resize((size_t)B * (n[0] - 1));
  origins_.resize((size_t)B * P);
  nextOrigins_.resize((size_t)B * P);
  std::vector<int32_t>&idx = idx_, &origins = origins_, &nextOrigins = nextOrigins_;
  for (int b = 0; b < B; ++b)
    for (int p = 0; p < P; ++p) origins[(size_t)b * P + p] = p;

  // Lap timer for the profile: each call charges the time since the previous one to a slot.
  out.profile.assign(req.profile ? 2 + (size_t)c.depth * kSlotsPerBlock : 0, 0.0);
  auto last = std::chrono::steady_clock::now();
  auto lap = [&](size_t slot) {
    if (!req.profile) return;
    const auto now = std::chrono::steady_clock::now();
    out.profile[slot] += std::chrono::duration<double, std::milli>(now - last).count();
    last = now;
  };
  auto blockSlot = [&](int block, ProfileSlot s) { return 2 + (size_t)block * kSlotsPerBlock + s; };

  patchEmbed(req.images, B, c.inChans, c.gridH, c.gridW, c.patchSize, w.patchW, w.patchB, w.clsToken, w.posEmbed, C,
             xp, hiddenp);
  lap(0);

  out.kept.clear();
  for (int i = 0; i < c.depth; ++i) {
    const BlockWeights& bw = w.blocks[i];
    const BlockPlan& plan = req.plan[i];
    const int N = n[i];
    int rows = B * N;
    layerNorm(xp, xnp, rows, C, bw.norm1W, bw.norm1B, c.eps);
    lap(blockSlot(i, kLn1));
    linear(xnp, rows, C, bw.qkvW, bw.qkvB, 3 * C, qkvp, Epilogue::Bias);
    lap(blockSlot(i, kQkv));
    const bool drop = plan.keep >= 0;
    clsAttention(qkvp, B, N, H, d, attnp, drop ? scoresp : nullptr);
    lap(blockSlot(i, kAttention));
    linear(attnp, rows, C, bw.projW, bw.projB, C, xp, Epilogue::BiasResidual);
    lap(blockSlot(i, kProj));
    if (drop) {
      const int k = plan.keep, outTokens = k + (plan.fuse ? 1 : 0);
      topk(scoresp, B, N - 1, k, idx.data());
      // attn is dead after proj and still in cache from it: gather into it, then swap, so the
      // copy does not fetch cold lines for ownership.
      gatherFuse(xp, B, N, C, scoresp, idx.data(), k, plan.fuse, attnp, origins.data(),
                 nextOrigins.data(), -1 - i);
      std::swap(xp, attnp);
      std::swap(origins, nextOrigins);
      out.kept.push_back({i, outTokens, std::vector<int32_t>(origins.begin(), origins.begin() + (size_t)B * outTokens)});
      rows = B * n[i + 1];
      lap(blockSlot(i, kReorganise));
    }
    layerNorm(xp, xnp, rows, C, bw.norm2W, bw.norm2B, c.eps);
    lap(blockSlot(i, kLn2));
    linear(xnp, rows, C, bw.fc1W, bw.fc1B, c.mlpHidden, hiddenp, Epilogue::BiasGelu);
    lap(blockSlot(i, kFc1));
    linear(hiddenp, rows, c.mlpHidden, bw.fc2W, bw.fc2B, C, xp, Epilogue::BiasResidual);
    lap(blockSlot(i, kFc2));
  }

  const int Nf = n[c.depth];
  for (int b = 0; b < B; ++b) std::copy_n(xp + (size_t)b * Nf * C, C, clsp + (size_t)b * C);
  layerNorm(clsp, clsp, B, C, w.normW, w.normB, c.eps);
  out.logits.assign((size_t)B * c.numClasses, 0.0f);
  linear(clsp, B, C, w.headW, w.headB, c.numClasses, out.logits.data(), Epilogue::Bias);
  lap(1);
}

}  // namespace evit::cpu
