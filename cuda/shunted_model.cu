#include "shunted_model.h"

#include <algorithm>
#include <cassert>
#include <cstring>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>

#include "attention_internal.h"
#include "conv_layout.h"
#include "kernels.h"

namespace evit::cuda {

namespace {

// Largest head dimension the attention kernels handle (attention.cu).
constexpr int kMaxHeadDim = 128;

size_t elementBytes(Precision p) { return p == Precision::F32 ? sizeof(float) : 2; }

// Keys M of head group t (0: rate r, 1: rate r / 2) of a stage with sr ratio r > 1.
int groupKeys(const StageGrid& g, int r, int t) {
  const int rho = t == 0 ? r : r / 2;
  return (g.h / rho) * (g.w / rho);
}

// im2col elements one image needs for the largest of the model's convolutions (0 where every
// convolution is a GEMM of its input as it is).
size_t columnsPerImage(const ShuntedConfig& c, const StageGrid& stem, const std::array<StageGrid, kShuntedStages>& g) {
  size_t most = (size_t)stem.tokens() * convDepth(c.inChans, 7);
  if (c.numConv > 0) most = std::max(most, (size_t)stem.tokens() * convDepth(c.stemWidth, 3));
  most = std::max(most, (size_t)g[0].tokens() * convDepth(c.stemWidth, 2));
  for (int s = 0; s < kShuntedStages; ++s) {
    const int C = c.stages[s].dim, r = c.stages[s].srRatio;
    if (s > 0) most = std::max(most, (size_t)g[s].tokens() * convDepth(c.stages[s - 1].dim, 3));
    if (r == 1) continue;
    for (int t = 0; t < 2; ++t) {
      const int rho = t == 0 ? r : r / 2;
      if (rho == 1 && convDepth(C, 1) == C) continue;  // the GEMM alone
      most = std::max(most, (size_t)groupKeys(g[s], r, t) * convDepth(C, rho));
    }
  }
  return most;
}

// Profile laps of one pass: stem, three patch embeddings, four stage norms, the head, and per
// block norm1, q, (kv, attention) once per head group, proj, norm2, fc1, dwconv, fc2.
size_t lapCount(const ShuntedConfig& c) {
  size_t laps = 1 + 3 + 4 + 1;
  for (const ShuntedStage& st : c.stages) laps += (size_t)st.depth * (st.srRatio > 1 ? 11 : 9);
  return laps;
}

}  // namespace

// One batch in flight: the activation buffers of the Shunted forward pass, each sized for the
// largest stage it serves (per image, times maxBatch), as the CPU backend's arena.
struct ShuntedContext : StreamContext {
  ShuntedContext(const ShuntedConfig& c, const StageGrid& stem, const std::array<StageGrid, kShuntedStages>& g,
                 const CudaOptions& o, int convChunk, int index)
      : StreamContext(lapCount(c)) {
    const size_t B = o.maxBatch, t = elementBytes(o.precision);
    size_t tokens = 0, hidden = (size_t)stem.tokens() * c.stemWidth, agg = 0, kvs = 0, vs = 0;
    for (int s = 0; s < kShuntedStages; ++s) {
      const size_t N = g[s].tokens(), C = c.stages[s].dim, F = c.stages[s].mlpHidden;
      const int r = c.stages[s].srRatio;
      tokens = std::max(tokens, N * C);
      hidden = std::max(hidden, N * F);
      if (r == 1) {
        kvs = std::max(kvs, 2 * N * C);
        continue;
      }
      for (int k = 0; k < 2; ++k) {
        const size_t M = groupKeys(g[s], r, k);
        agg = std::max(agg, M * C);
        kvs = std::max(kvs, M * C);
        vs = std::max(vs, M * C / 2);
      }
    }
    ArenaLayout d;
    const size_t oImages = d.reserve<float>(B * c.inChans * c.imgH * c.imgW);
    const size_t oCols = d.reserve<char>((size_t)convChunk * columnsPerImage(c, stem, g) * t);
    const size_t oX = d.reserve<float>(B * tokens), oXf = d.reserve<float>(B * tokens);
    const size_t oNormed = d.reserve<char>(B * tokens * t), oQ = d.reserve<char>(B * tokens * t);
    const size_t oO = d.reserve<char>(B * tokens * t), oAgg = d.reserve<char>(B * agg * t);
    const size_t oKv = d.reserve<char>(B * kvs * t), oV = d.reserve<char>(B * vs * t);
    const size_t oU = d.reserve<char>(B * hidden * t), oH = d.reserve<char>(B * hidden * t);
    const size_t oFeat = d.reserve<char>(B * c.stages[3].dim * t);
    const size_t oLogits = d.reserve<float>(B * c.numClasses);
    ArenaLayout h;
    const size_t hLogits = h.reserve<float>(B * c.numClasses);
    const size_t hImages = h.reserve<float>(B * c.inChans * c.imgH * c.imgW);

    allocate(d, h, "execution context " + std::to_string(index) + " (maxBatch " + std::to_string(o.maxBatch) + ")");
    images = device.at<float>(oImages);
    cols = device.at<void>(oCols);
    x = device.at<float>(oX);
    xf = device.at<float>(oXf);
    normed = device.at<void>(oNormed);
    q = device.at<void>(oQ);
    o_ = device.at<void>(oO);
    aggregated = device.at<void>(oAgg);
    kv = device.at<void>(oKv);
    v = device.at<void>(oV);
    u = device.at<void>(oU);
    hid = device.at<void>(oH);
    feat = device.at<void>(oFeat);
    logits = device.at<float>(oLogits);
    logitsHost = host.at<float>(hLogits);
    imagesHost = host.at<float>(hImages);
  }

  // "T" buffers hold the compute type; per image the largest any stage needs.
  float* images = nullptr;     // [B, inChans, imgH, imgW]
  float* imagesHost = nullptr; // pinned staging of a chunk's images: the upload is a true asynchronous DMA
  void* cols = nullptr;        // T, im2col columns of convChunk images
  float* x = nullptr;          // fp32 residual stream [B, N, C]
  float* xf = nullptr;         // fp32 convolution outputs before their LayerNorm; the final norm's output
  void* normed = nullptr;      // T [B, N, C], LayerNorm outputs (the GEMMs' and the next stage's input)
  void* q = nullptr;           // T [B, N, C]
  void* o_ = nullptr;          // T [B, N, C], attention output, head groups side by side
  void* aggregated = nullptr;  // T [B, M, C], GELU(LN(sr conv)) of one head group
  void* kv = nullptr;          // T [B, M, C] (sr > 1) or [B, N, 2C] (sr = 1)
  void* v = nullptr;           // T [B, M, C/2], v + local_conv(v) of one head group
  void* u = nullptr;           // T [B, N, F] fc1 output; the stem's convolutions ping-pong between u ...
  void* hid = nullptr;         // ... and hid, the MLP's GELU(u + dwconv(u))
  void* feat = nullptr;        // T [B, C4], the mean of the final tokens
  float* logits = nullptr;     // [B, classes]
  float* logitsHost = nullptr;  // pinned
};

CudaShuntedModel::CudaShuntedModel(const ShuntedConfig& cfg, const HostWeights& weights, const CudaOptions& options,
                                   size_t columnBudget)
    : DeviceModel(options),
      cfg_(cfg),
      stemGrid_(shuntedStemGrid(cfg)),
      grids_(shuntedStageGrids(cfg)),
      weights_(options.precision) {
  // Fail at load, not at the first batch: every stage's head dim, and each attention's score
  // rows (M keys per query row, in shared memory) on this device.
  int optin = 0;
  EVIT_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device_));
  for (int s = 0; s < kShuntedStages; ++s) {
    const ShuntedStage& st = cfg_.stages[s];
    const int d = st.dim / st.heads, r = st.srRatio;
    if (d > kMaxHeadDim)
      throw CudaError("the CUDA attention kernels support head dimensions up to " + std::to_string(kMaxHeadDim) +
                      "; stage " + std::to_string(s + 1) + " has " + std::to_string(d) + " (dim / heads)");
    for (int t = 0; t < (r > 1 ? 2 : 1); ++t) {
      const int M = r > 1 ? groupKeys(grids_[s], r, t) : grids_[s].tokens();
      const bool tensorCores = options_.precision != Precision::F32 && d % 16 == 0;
      const size_t bytes = tensorCores ? attentionMmaSharedBytes(M, d, 1) : attentionSimtSharedBytes(M, d);
      if (bytes > (size_t)optin)
        throw CudaError("stage " + std::to_string(s + 1) + "'s attention over " + std::to_string(M) +
                        " keys needs " + std::to_string(bytes) + " bytes of shared memory per block; this device " +
                        "allows " + std::to_string(optin) + ": use a smaller input size");
    }
  }

  const size_t perImage = columnsPerImage(cfg_, stemGrid_, grids_) * elementBytes(options_.precision);
  convChunk_ = (int)std::clamp<size_t>(perImage ? columnBudget / perImage : options_.maxBatch, 1,
                                       (size_t)options_.maxBatch);

  // Every tensor into one upload; the structs' fields are filled in once it has run.
  std::unordered_map<std::string, size_t> numel;
  for (const TensorSpec& t : shuntedTensorSpecs(cfg_)) numel[t.name] = t.numel;
  WeightUpload& up = weights_;
  std::vector<std::pair<const void**, size_t>> matrices;
  std::vector<std::pair<const float**, size_t>> vectors;
  auto vec = [&](const float** field, const std::string& name) {
    vectors.push_back({field, up.vec(weights.tensor(name), numel.at(name))});
  };
  auto linearLayer = [&](Gemm& g, const std::string& name) {
    matrices.push_back({&g.w, up.mat(weights.tensor(name + ".weight"), numel.at(name + ".weight"))});
    vec(&g.b, name + ".bias");
  };
  auto conv = [&](Gemm& g, const std::string& name, int cout, int cin, int k) {
    std::vector<float> relaid((size_t)cout * convDepth(cin, k));
    convWeightForGemm(relaid.data(), weights.tensor(name + ".weight"), cout, cin, k);
    matrices.push_back({&g.w, up.mat(std::move(relaid))});
    vec(&g.b, name + ".bias");
  };
  auto norm = [&](Vec& v, const std::string& name) {
    vec(&v.w, name + ".weight");
    vec(&v.b, name + ".bias");
  };
  auto depthwise = [&](Vec& v, const std::string& name, int C) {
    std::vector<float> taps((size_t)9 * C);
    depthwiseWeightToTaps(taps.data(), weights.tensor(name + ".weight"), C);
    vectors.push_back({&v.w, up.vec(std::move(taps))});
    vec(&v.b, name + ".bias");
  };

  const ShuntedConfig& c = cfg_;
  const int S = c.stemWidth;
  stem_.resize(c.numConv + 2);
  blocks_.resize(kShuntedStages);
  for (int s = 0; s < kShuntedStages; ++s) blocks_[s].resize(c.stages[s].depth);
  conv(stem_[0], "patch_embed1.conv.0", S, c.inChans, 7);
  for (int j = 0; j < c.numConv; ++j) conv(stem_[1 + j], "patch_embed1.conv." + std::to_string(3 + 3 * j), S, S, 3);
  conv(stem_.back(), "patch_embed1.conv." + std::to_string(3 + 3 * c.numConv), c.stages[0].dim, S, 2);
  norm(stemNorm_, "patch_embed1.norm");
  for (int s = 0; s < kShuntedStages; ++s) {
    const ShuntedStage& st = c.stages[s];
    const int C = st.dim, r = st.srRatio;
    const std::string n = std::to_string(s + 1);
    if (s > 0) {
      conv(patch_[s], "patch_embed" + n + ".proj", C, c.stages[s - 1].dim, 3);
      norm(patchNorm_[s], "patch_embed" + n + ".norm");
    }
    for (int j = 0; j < st.depth; ++j) {
      const std::string p = "block" + n + "." + std::to_string(j) + ".";
      Block& b = blocks_[s][j];
      norm(b.norm1, p + "norm1");
      linearLayer(b.q, p + "attn.q");
      linearLayer(b.proj, p + "attn.proj");
      if (r > 1) {
        for (int t = 0; t < 2; ++t) {
          const std::string i = std::to_string(t + 1);
          conv(b.sr[t], p + "attn.sr" + i, C, C, t == 0 ? r : r / 2);
          norm(b.srNorm[t], p + "attn.norm" + i);
          linearLayer(b.kv[t], p + "attn.kv" + i);
          depthwise(b.local[t], p + "attn.local_conv" + i, C / 2);
        }
      } else {
        linearLayer(b.kvAll, p + "attn.kv");
        depthwise(b.localAll, p + "attn.local_conv", C);
      }
      norm(b.norm2, p + "norm2");
      linearLayer(b.fc1, p + "mlp.fc1");
      depthwise(b.dwconv, p + "mlp.dwconv.dwconv", st.mlpHidden);
      linearLayer(b.fc2, p + "mlp.fc2");
    }
    norm(stageNorm_[s], "norm" + n);
  }
  linearLayer(head_, "head");
  {
    UploadStream upload;
    up.upload(upload.s, "the model weights");
  }
  for (auto& [field, i] : matrices) *field = up.matrix(i);
  for (auto& [field, i] : vectors) *field = up.vector(i);

  for (int i = 0; i < options_.streams; ++i)
    addContext(std::make_unique<ShuntedContext>(cfg_, stemGrid_, grids_, options_, convChunk_, i));
}

CudaShuntedModel::~CudaShuntedModel() { drain(); }

void CudaShuntedModel::forward(const ForwardRequest& req, ForwardResult& out) {
  assert(req.images && req.batch >= 1 && req.plan.empty());
  out.logits.assign((size_t)req.batch * cfg_.numClasses, 0.0f);
  out.kept.clear();
  out.profile.assign(req.profile ? shuntedProfileSize(cfg_.totalDepth()) : 0, 0.0);
  runInChunks(req.batch, [&](StreamContext& ctx, int first, int count) {
    runChunk(static_cast<ShuntedContext&>(ctx), req, first, count, out);
  });
}

void CudaShuntedModel::runChunk(ShuntedContext& ctx, const ForwardRequest& req, int first, int count,
                                ForwardResult& out) {
  const ShuntedConfig& c = cfg_;
  const cudaStream_t s = ctx.stream;
  const size_t imageFloats = (size_t)c.inChans * c.imgH * c.imgW;
  // Through pinned staging (free again: the previous chunk synchronised), so the upload overlaps
  // the other contexts' compute instead of being the runtime's staged pageable copy.
  const size_t bytes = (size_t)count * imageFloats * sizeof(float);
  std::memcpy(ctx.imagesHost, req.images + (size_t)first * imageFloats, bytes);
  EVIT_CUDA_CHECK(cudaMemcpyAsync(ctx.images, ctx.imagesHost, bytes, cudaMemcpyHostToDevice, s));
  std::optional<OpTimer> timer;
  if (req.profile) {
    timer.emplace(ctx.events, s);
    enqueue(ctx, count, &*timer);  // eager: events between the ops
  } else {
    launch(ctx, {count}, [&] { enqueue(ctx, count, nullptr); });
  }
  EVIT_CUDA_CHECK(cudaMemcpyAsync(ctx.logitsHost, ctx.logits, (size_t)count * c.numClasses * sizeof(float),
                                  cudaMemcpyDeviceToHost, s));
  EVIT_CUDA_CHECK(cudaStreamSynchronize(s));
  std::copy_n(ctx.logitsHost, (size_t)count * c.numClasses, out.logits.begin() + (size_t)first * c.numClasses);
  if (timer) timer->addTo(out.profile);
}

void CudaShuntedModel::enqueue(ShuntedContext& ctx, int batch, OpTimer* timer) {
  switch (options_.precision) {
    case Precision::F32:
      return enqueueAs<float>(ctx, batch, timer);
    case Precision::F16:
      return enqueueAs<__half>(ctx, batch, timer);
    case Precision::BF16:
      return enqueueAs<__nv_bfloat16>(ctx, batch, timer);
  }
}

template <class T>
void CudaShuntedModel::enqueueAs(ShuntedContext& ctx, int B, OpTimer* timer) {
  const ShuntedConfig& c = cfg_;
  const cudaStream_t s = ctx.stream;
  auto lap = [&](size_t slot) {
    if (timer) timer->lap(slot);
  };
  auto W = [](const Gemm& g) { return static_cast<const T*>(g.w); };
  T* cols = static_cast<T*>(ctx.cols);
  T* normed = static_cast<T*>(ctx.normed);
  T* q = static_cast<T*>(ctx.q);
  T* o = static_cast<T*>(ctx.o_);
  T* agg = static_cast<T*>(ctx.aggregated);
  T* kv = static_cast<T*>(ctx.kv);
  T* v = static_cast<T*>(ctx.v);
  T* u = static_cast<T*>(ctx.u);
  T* h = static_cast<T*>(ctx.hid);
  float* x = ctx.x;
  float* xf = ctx.xf;
  // A convolution of the B images, convChunk_ at a time (their columns share one scratch).
  auto conv = [&](void* out, size_t outBytesPerImage, const auto* in, size_t inPerImage, ImageLayout layout,
                  const Gemm& g, int H, int Wd, int Cin, int Cout, int k, int stride, int pad, Epilogue ep) {
    for (int i0 = 0; i0 < B; i0 += convChunk_) {
      const int n = std::min(convChunk_, B - i0);
      conv2d<T>(static_cast<char*>(out) + (size_t)i0 * outBytesPerImage, cols, in + (size_t)i0 * inPerImage, layout,
                W(g), g.b, n, H, Wd, Cin, Cout, k, stride, pad, ep, s);
    }
  };

  // Stem: 7×7/2 conv + ReLU on the NCHW image, numConv × (3×3 conv + ReLU), 2×2/2 conv, LN; the
  // BatchNorms arrived folded into the convs. Each conv's epilogue writes what its consumer reads:
  // T for the next conv, fp32 for the LayerNorm.
  const int S = c.stemWidth, sh = stemGrid_.h, sw = stemGrid_.w, C1 = c.stages[0].dim, N1 = grids_[0].tokens();
  const size_t stemPixels = (size_t)sh * sw;
  conv(u, stemPixels * S * sizeof(T), ctx.images, (size_t)c.inChans * c.imgH * c.imgW, ImageLayout::NCHW, stem_[0],
       c.imgH, c.imgW, c.inChans, S, 7, 2, 3, Epilogue::BiasRelu);
  for (int j = 1; j <= c.numConv; ++j) {
    conv(h, stemPixels * S * sizeof(T), u, stemPixels * S, ImageLayout::NHWC, stem_[j], sh, sw, S, S, 3, 1, 1,
         Epilogue::BiasRelu);
    std::swap(u, h);
  }
  conv(xf, (size_t)N1 * C1 * sizeof(float), u, stemPixels * S, ImageLayout::NHWC, stem_.back(), sh, sw, S, C1, 2, 2,
       0, Epilogue::BiasFloat);
  layerNorm<float>(x, xf, C1, stemNorm_.w, stemNorm_.b, B * N1, C1, c.embedEps, s);
  u = static_cast<T*>(ctx.u);
  h = static_cast<T*>(ctx.hid);
  lap(kShuntedStem);

  int block = 0;
  for (int si = 0; si < kShuntedStages; ++si) {
    const ShuntedStage& st = c.stages[si];
    const int C = st.dim, F = st.mlpHidden, r = st.srRatio, H = grids_[si].h, Wd = grids_[si].w, N = H * Wd;
    const int rows = B * N, d = C / st.heads;
    if (si > 0) {
      // OverlapPatchEmbed: 3×3/2 conv of the previous stage's normalised tokens read as an NHWC image, LN.
      const int Cp = c.stages[si - 1].dim;
      conv(xf, (size_t)N * C * sizeof(float), normed, (size_t)grids_[si - 1].tokens() * Cp, ImageLayout::NHWC,
           patch_[si], grids_[si - 1].h, grids_[si - 1].w, Cp, C, 3, 2, 1, Epilogue::BiasFloat);
      layerNorm<float>(x, xf, C, patchNorm_[si].w, patchNorm_[si].b, rows, C, c.embedEps, s);
      lap(kShuntedPatchEmbed);
    }
    for (const Block& b : blocks_[si]) {
      layerNorm<T>(normed, x, C, b.norm1.w, b.norm1.b, rows, C, c.blockEps, s);
      lap(shuntedProfileSlot(block, kShuntedNorm1));
      linear<T>(q, normed, W(b.q), b.q.b, rows, C, C, Epilogue::Bias, s);
      lap(shuntedProfileSlot(block, kShuntedQ));
      if (r > 1) {
        // Two head groups: heads [0, g) attend to keys aggregated at rate r, [g, 2g) at r/2; each
        // group reads and writes its own half of the channels of q and o.
        const int g = st.heads / 2, half = C / 2;
        for (int t = 0; t < 2; ++t) {
          const int rho = t == 0 ? r : r / 2, mh = H / rho, mw = Wd / rho, M = mh * mw;
          conv(xf, (size_t)M * C * sizeof(float), normed, (size_t)N * C, ImageLayout::NHWC, b.sr[t], H, Wd, C, C, rho,
               rho, 0, Epilogue::BiasFloat);
          layerNormGelu<T>(agg, xf, C, b.srNorm[t].w, b.srNorm[t].b, B * M, C, c.srEps, s);
          linear<T>(kv, agg, W(b.kv[t]), b.kv[t].b, B * M, C, C, Epilogue::Bias, s);
          // v += local_conv(v), over the aggregated grid, before attention.
          depthwise3x3<T>(v, kv + half, C, kv + half, C, b.local[t].w, b.local[t].b, B, mh, mw, half, false, s);
          lap(shuntedProfileSlot(block, kShuntedKv));
          groupAttention<T>(o + t * half, C, nullptr, q + t * half, C, kv, C, v, half, B, N, M, g, d, s);
          lap(shuntedProfileSlot(block, kShuntedAttention));
        }
      } else {
        linear<T>(kv, normed, W(b.kvAll), b.kvAll.b, rows, 2 * C, C, Epilogue::Bias, s);
        lap(shuntedProfileSlot(block, kShuntedKv));
        groupAttention<T>(o, C, nullptr, q, C, kv, 2 * C, kv + C, 2 * C, B, N, N, st.heads, d, s);
        // o += local_conv(v): after attention where sr = 1.
        depthwise3x3<T>(o, kv + C, 2 * C, o, C, b.localAll.w, b.localAll.b, B, H, Wd, C, false, s);
        lap(shuntedProfileSlot(block, kShuntedAttention));
      }
      linear<T>(x, o, W(b.proj), b.proj.b, rows, C, C, Epilogue::BiasResidual, s);
      lap(shuntedProfileSlot(block, kShuntedProj));
      layerNorm<T>(normed, x, C, b.norm2.w, b.norm2.b, rows, C, c.blockEps, s);
      lap(shuntedProfileSlot(block, kShuntedNorm2));
      linear<T>(u, normed, W(b.fc1), b.fc1.b, rows, F, C, Epilogue::Bias, s);
      lap(shuntedProfileSlot(block, kShuntedFc1));
      depthwise3x3<T>(h, u, F, u, F, b.dwconv.w, b.dwconv.b, B, H, Wd, F, true, s);
      lap(shuntedProfileSlot(block, kShuntedDwconv));
      linear<T>(x, h, W(b.fc2), b.fc2.b, rows, C, F, Epilogue::BiasResidual, s);
      lap(shuntedProfileSlot(block, kShuntedFc2));
      ++block;
    }
    // The stage norm: in T for the next stage's patch embedding, in fp32 for the final mean.
    if (si + 1 < kShuntedStages)
      layerNorm<T>(normed, x, C, stageNorm_[si].w, stageNorm_[si].b, rows, C, c.blockEps, s);
    else
      layerNorm<float>(xf, x, C, stageNorm_[si].w, stageNorm_[si].b, rows, C, c.blockEps, s);
    lap(kShuntedStageNorm);
  }

  const int C4 = c.stages[3].dim;
  T* feat = static_cast<T*>(ctx.feat);
  meanTokens<T>(feat, xf, B, grids_[3].tokens(), C4, s);
  linear<T>(ctx.logits, feat, W(head_), head_.b, B, c.numClasses, C4, Epilogue::BiasFloat, s);
  lap(kShuntedHead);
}

}  // namespace evit::cuda

namespace evit {

std::shared_ptr<PreparedModel> makeCudaShuntedModel(const ShuntedConfig& cfg, const HostWeights& weights,
                                                    const CudaOptions& options) {
  const CudaReport r = probeCuda();
  if (!r.available) throw std::runtime_error("the CUDA backend cannot run here: " + r.reason);
  return std::make_shared<cuda::CudaShuntedModel>(cfg, weights, options);
}

}  // namespace evit
