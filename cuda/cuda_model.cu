#include "cuda_model.h"

#include <algorithm>
#include <cassert>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <utility>

#include "../src/backend/pixels.h"
#include "kernels.h"

namespace evit::cuda {

namespace {

// Largest head dimension cuda/attention.cu handles.
constexpr int kMaxHeadDim = 128;

}  // namespace

CudaModel::CudaModel(const ModelConfig& cfg, const HostWeights& weights, const CudaOptions& options)
    : DeviceModel(options), cfg_(cfg) {
  // The attention kernels keep a head's row in registers (cuda/attention.cu): fail at load, not at the first batch.
  if (cfg_.headDim() > kMaxHeadDim)
    throw CudaError("the CUDA attention kernels support head dimensions up to " + std::to_string(kMaxHeadDim) +
                        "; this model has " + std::to_string(cfg_.headDim()) + " (embedDim / numHeads)");
  {
    UploadStream upload;
    weights_ = std::make_unique<DeviceWeights>(cfg_, weights.views(), options_.precision, upload.s);
  }
  for (int i = 0; i < options_.streams; ++i) addContext(std::make_unique<ExecutionContext>(cfg_, options_, i));
}

CudaModel::~CudaModel() { drain(); }

void CudaModel::forward(const ForwardRequest& req, ForwardResult& out) {
  const ModelConfig& c = cfg_;
  const std::vector<int>& n = req.tokens;
  assert((req.images || (req.pixels && req.pixelLut)) && req.batch >= 1 && n.size() == (size_t)c.depth + 1);

  const int B = req.batch;
  out.logits.assign((size_t)B * c.numClasses, 0.0f);
  out.kept.clear();
  for (int i = 0; i < c.depth; ++i) {
    const BlockPlan& p = req.plan[i];
    if (p.keep < 0) continue;
    const int perImage = p.keep + (p.fuse ? 1 : 0);
    out.kept.push_back({i, perImage, std::vector<int32_t>((size_t)B * perImage)});
  }
  out.profile.assign(req.profile ? profileSize(c.depth) : 0, 0.0);
  runInChunks(B, [&](StreamContext& ctx, int first, int count) {
    runChunk(static_cast<ExecutionContext&>(ctx), req, n, first, count, out);
  });
}

void CudaModel::runChunk(ExecutionContext& ctx, const ForwardRequest& req, const std::vector<int>& n, int first,
                         int count, ForwardResult& out) {
  const ModelConfig& c = cfg_;
  const cudaStream_t s = ctx.stream;
  const size_t imageElems = (size_t)c.inChans * c.imgH() * c.imgW();
  // Through the context's pinned staging: the previous chunk's upload from it completed at that
  // chunk's synchronisation, and this host copy runs on the worker thread while the other
  // contexts compute. From pinned memory the upload is a DMA queued behind nothing on the host.
  ctx.pixelInput = req.pixels != nullptr;
  if (ctx.pixelInput) {
    const size_t lutFloats = (size_t)c.inChans * kPixelLevels, bytes = (size_t)count * imageElems;
    std::memcpy(ctx.pixelLutHost, req.pixelLut, lutFloats * sizeof(float));
    std::memcpy(ctx.inputHost, req.pixels + (size_t)first * imageElems, bytes);
    EVIT_CUDA_CHECK(
        cudaMemcpyAsync(ctx.pixelLut, ctx.pixelLutHost, lutFloats * sizeof(float), cudaMemcpyHostToDevice, s));
    EVIT_CUDA_CHECK(cudaMemcpyAsync(ctx.pixels, ctx.inputHost, bytes, cudaMemcpyHostToDevice, s));
  } else {
    const size_t bytes = (size_t)count * imageElems * sizeof(float);
    std::memcpy(ctx.inputHost, req.images + (size_t)first * imageElems, bytes);
    EVIT_CUDA_CHECK(cudaMemcpyAsync(ctx.images, ctx.inputHost, bytes, cudaMemcpyHostToDevice, s));
  }
  std::optional<OpTimer> timer;
  if (req.profile) {
    timer.emplace(ctx.events, s);
    enqueue(ctx, count, req.plan, n, &*timer);  // eager: events between the ops
  } else {
    launch(ctx, count, req.plan, n);
  }
  size_t originInts = 0;
  for (const KeptTokens& k : out.kept) originInts += (size_t)count * k.perImage;
  EVIT_CUDA_CHECK(cudaMemcpyAsync(ctx.logitsHost, ctx.logits, (size_t)count * c.numClasses * sizeof(float),
                                  cudaMemcpyDeviceToHost, s));
  if (originInts)
    EVIT_CUDA_CHECK(
        cudaMemcpyAsync(ctx.originsHost, ctx.origins, originInts * sizeof(int32_t), cudaMemcpyDeviceToHost, s));
  EVIT_CUDA_CHECK(cudaStreamSynchronize(s));

  std::copy_n(ctx.logitsHost, (size_t)count * c.numClasses, out.logits.begin() + (size_t)first * c.numClasses);
  const int32_t* from = ctx.originsHost;
  for (KeptTokens& k : out.kept) {
    const size_t len = (size_t)count * k.perImage;
    std::copy_n(from, len, k.origins.begin() + (size_t)first * k.perImage);
    from += len;
  }
  if (timer) timer->addTo(out.profile);
}

void CudaModel::launch(ExecutionContext& ctx, int batch, const std::vector<BlockPlan>& plan,
                       const std::vector<int>& n) {
  std::vector<int> key{batch, ctx.pixelInput ? 1 : 0};  // the patch embedding reads pixels or images
  for (const BlockPlan& p : plan) key.push_back(p.keep < 0 ? -1 : 2 * p.keep + (p.fuse ? 1 : 0));
  DeviceModel::launch(ctx, key, [&] { enqueue(ctx, batch, plan, n, nullptr); });
}

void CudaModel::enqueue(ExecutionContext& ctx, int batch, const std::vector<BlockPlan>& plan,
                        const std::vector<int>& n, OpTimer* timer) {
  switch (options_.precision) {
    case Precision::F32:
      return enqueueAs<float>(ctx, batch, plan, n, timer);
    case Precision::F16:
      return enqueueAs<__half>(ctx, batch, plan, n, timer);
    case Precision::BF16:
      return enqueueAs<__nv_bfloat16>(ctx, batch, plan, n, timer);
  }
}

template <class T>
void CudaModel::enqueueAs(ExecutionContext& ctx, int B, const std::vector<BlockPlan>& plan,
                          const std::vector<int>& n, OpTimer* timer) {
  const ModelConfig& c = cfg_;
  const DeviceWeights& w = *weights_;
  const cudaStream_t s = ctx.stream;
  const int C = c.embedDim, P = c.numPatches(), Hd = c.mlpHidden, heads = c.numHeads, d = c.headDim();
  const int patchK = c.inChans * c.patchSize * c.patchSize;
  auto lap = [&](size_t slot) {
    if (timer) timer->lap(slot);
  };
  auto W = [](const void* p) { return static_cast<const T*>(p); };
  T* cols = static_cast<T*>(ctx.cols);
  T* normed = static_cast<T*>(ctx.normed);
  T* qkv = static_cast<T*>(ctx.qkv);
  T* attn = static_cast<T*>(ctx.attn);
  T* hidden = static_cast<T*>(ctx.hidden);
  T* headIn = static_cast<T*>(ctx.headIn);

  // Patch embedding: the conv as a GEMM over patchified columns, into the second stream
  // buffer, then class token and position embedding assemble the first.
  if (ctx.pixelInput)
    patchifyPixels<T>(cols, ctx.pixels, ctx.pixelLut, B, c.inChans, c.gridH, c.gridW, c.patchSize, s);
  else
    patchify<T>(cols, ctx.images, B, c.inChans, c.gridH, c.gridW, c.patchSize, s);
  linear<T>(ctx.stream1, cols, W(w.patchW), w.patchB, B * P, C, patchK, Epilogue::BiasFloat, s, ctx.splitK);
  assembleTokens(ctx.stream0, ctx.stream1, w.clsToken, w.posEmbed, B, P, C, s);
  lap(kPatchEmbed);

  float* x = ctx.stream0;
  float* spare = ctx.stream1;
  const int32_t* originsIn = ctx.identity;
  int32_t* originsOut = ctx.origins;
  for (int i = 0; i < c.depth; ++i) {
    const DeviceBlockWeights& bw = w.blocks[i];
    const BlockPlan& p = plan[i];
    const int N = n[i];
    int rows = B * N;
    const bool drop = p.keep >= 0;
    layerNorm<T>(normed, x, C, bw.norm1W, bw.norm1B, rows, C, c.eps, s);
    lap(profileSlot(i, kLn1));
    linear<T>(qkv, normed, W(bw.qkvW), bw.qkvB, rows, 3 * C, C, Epilogue::Bias, s, ctx.splitK);
    lap(profileSlot(i, kQkv));
    attention<T>(attn, drop ? ctx.clsProbs : nullptr, qkv, B, N, heads, d, s);
    lap(profileSlot(i, kAttention));
    linear<T>(x, attn, W(bw.projW), bw.projB, rows, C, C, Epilogue::BiasResidual, s, ctx.splitK);
    lap(profileSlot(i, kProj));
    if (drop) {
      const int perImage = p.keep + (p.fuse ? 1 : 0);
      topkGatherFuse(spare, originsOut, ctx.reorgOrder, ctx.reorgScores, x, ctx.clsProbs, originsIn, B, N, heads, C,
                     p.keep, p.fuse, -1 - i, s);
      std::swap(x, spare);
      originsIn = originsOut;
      originsOut += (size_t)B * perImage;
      rows = B * n[i + 1];
      lap(profileSlot(i, kReorganise));
    }
    layerNorm<T>(normed, x, C, bw.norm2W, bw.norm2B, rows, C, c.eps, s);
    lap(profileSlot(i, kLn2));
    linear<T>(hidden, normed, W(bw.fc1W), bw.fc1B, rows, Hd, C, Epilogue::BiasGelu, s, ctx.splitK);
    lap(profileSlot(i, kFc1));
    linear<T>(x, hidden, W(bw.fc2W), bw.fc2B, rows, C, Hd, Epilogue::BiasResidual, s, ctx.splitK);
    lap(profileSlot(i, kFc2));
  }

  // Head: LayerNorm of each image's class token (row stride N * C), then the classifier.
  const long finalStride = (long)n[c.depth] * C;
  layerNorm<T>(headIn, x, finalStride, w.normW, w.normB, B, C, c.eps, s);
  linear<T>(ctx.logits, headIn, W(w.headW), w.headB, B, c.numClasses, C, Epilogue::BiasFloat, s, ctx.splitK);
  lap(kHead);
}

}  // namespace evit::cuda

namespace evit {

std::shared_ptr<PreparedModel> makeCudaModel(const ModelConfig& cfg, const HostWeights& weights,
                                             const CudaOptions& options) {
  const CudaReport r = probeCuda();
  if (!r.available) throw std::runtime_error("the CUDA backend cannot run here: " + r.reason);
  return std::make_shared<cuda::CudaModel>(cfg, weights, options);
}

}  // namespace evit
