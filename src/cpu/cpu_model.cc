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
  std::vector<float> x(maxRows * C), xn(maxRows * C), qkv(maxRows * 3 * C), attn(maxRows * C),
      hidden(maxRows * c.mlpHidden), scores((size_t)B * (n[0] - 1));
  std::vector<int32_t> idx((size_t)B * (n[0] - 1)), origins((size_t)B * P), nextOrigins((size_t)B * P);
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
             x.data());
  lap(0);

  out.kept.clear();
  for (int i = 0; i < c.depth; ++i) {
    const BlockWeights& bw = w.blocks[i];
    const BlockPlan& plan = req.plan[i];
    const int N = n[i];
    int rows = B * N;
    layerNorm(x.data(), xn.data(), rows, C, bw.norm1W, bw.norm1B, c.eps);
    lap(blockSlot(i, kLn1));
    linear(xn.data(), rows, C, bw.qkvW, bw.qkvB, 3 * C, qkv.data(), Epilogue::Bias);
    lap(blockSlot(i, kQkv));
    const bool drop = plan.keep >= 0;
    clsAttention(qkv.data(), B, N, H, d, attn.data(), drop ? scores.data() : nullptr);
    lap(blockSlot(i, kAttention));
    linear(attn.data(), rows, C, bw.projW, bw.projB, C, x.data(), Epilogue::BiasResidual);
    lap(blockSlot(i, kProj));
    if (drop) {
      const int k = plan.keep, outTokens = k + (plan.fuse ? 1 : 0);
      topk(scores.data(), B, N - 1, k, idx.data());
      // xn is free here and as large as x: gather into it, then swap.
      gatherFuse(x.data(), B, N, C, scores.data(), idx.data(), k, plan.fuse, xn.data(), origins.data(),
                 nextOrigins.data(), -1 - i);
      std::swap(x, xn);
      std::swap(origins, nextOrigins);
      out.kept.push_back({i, outTokens, std::vector<int32_t>(origins.begin(), origins.begin() + (size_t)B * outTokens)});
      rows = B * n[i + 1];
      lap(blockSlot(i, kReorganise));
    }
    layerNorm(x.data(), xn.data(), rows, C, bw.norm2W, bw.norm2B, c.eps);
    lap(blockSlot(i, kLn2));
    linear(xn.data(), rows, C, bw.fc1W, bw.fc1B, c.mlpHidden, hidden.data(), Epilogue::BiasGelu);
    lap(blockSlot(i, kFc1));
    linear(hidden.data(), rows, c.mlpHidden, bw.fc2W, bw.fc2B, C, x.data(), Epilogue::BiasResidual);
    lap(blockSlot(i, kFc2));
  }

  const int Nf = n[c.depth];
  std::vector<float> cls((size_t)B * C);
  for (int b = 0; b < B; ++b) std::copy_n(x.data() + (size_t)b * Nf * C, C, cls.data() + (size_t)b * C);
  layerNorm(cls.data(), cls.data(), B, C, w.normW, w.normB, c.eps);
  out.logits.assign((size_t)B * c.numClasses, 0.0f);
  linear(cls.data(), B, C, w.headW, w.headB, c.numClasses, out.logits.data(), Epilogue::Bias);
  lap(1);
}

}  // namespace evit::cpu
