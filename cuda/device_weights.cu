#include "device_weights.h"

#include <algorithm>
#include <memory>
#include <utility>

#include "kernels.h"

namespace evit::cuda {

namespace {

// A host tensor and where it goes in the device block.
struct Upload {
  const float* src;
  size_t numel;
  size_t offset;
  bool matrix;  // converted to the compute type; otherwise copied as fp32
};

size_t elementBytes(Precision p) { return p == Precision::F32 ? 4 : 2; }

}  // namespace

DeviceWeights::DeviceWeights(const ModelConfig& c, const WeightViews& w, Precision precision, cudaStream_t stream)
    : precision_(precision) {
  const size_t C = c.embedDim, Hd = c.mlpHidden, P = c.numPatches();
  const size_t patchK = (size_t)c.inChans * c.patchSize * c.patchSize;
  const size_t tBytes = elementBytes(precision);

  ArenaLayout layout;
  std::vector<Upload> uploads;
  auto vec = [&](const float* src, size_t n) {
    uploads.push_back({src, n, layout.reserve<float>(n), false});
    return uploads.size() - 1;
  };
  auto mat = [&](const float* src, size_t n) {
    uploads.push_back({src, n, layout.reserve<char>(n * tBytes), true});
    return uploads.size() - 1;
  };
  const size_t cls = vec(w.clsToken, C), pos = vec(w.posEmbed, (1 + P) * C);
  const size_t pW = mat(w.patchW, C * patchK), pB = vec(w.patchB, C);
  struct BlockAt {
    size_t n1w, n1b, qkvW, qkvB, projW, projB, n2w, n2b, fc1W, fc1B, fc2W, fc2B;
  };
  std::vector<BlockAt> at;
  for (const BlockWeights& b : w.blocks) {
    BlockAt a;
    a.n1w = vec(b.norm1W, C);
    a.n1b = vec(b.norm1B, C);
    a.qkvW = mat(b.qkvW, 3 * C * C);
    a.qkvB = vec(b.qkvB, 3 * C);
    a.projW = mat(b.projW, C * C);
    a.projB = vec(b.projB, C);
    a.n2w = vec(b.norm2W, C);
    a.n2b = vec(b.norm2B, C);
    a.fc1W = mat(b.fc1W, Hd * C);
    a.fc1B = vec(b.fc1B, Hd);
    a.fc2W = mat(b.fc2W, C * Hd);
    a.fc2B = vec(b.fc2B, C);
    at.push_back(a);
  }
  const size_t nW = vec(w.normW, C), nB = vec(w.normB, C);
  const size_t hW = mat(w.headW, (size_t)c.numClasses * C), hB = vec(w.headB, c.numClasses);

  memory_ = DeviceArena(layout.bytes(), "the model weights");

  // Matrices in a 16-bit type pass through one fp32 staging buffer, converted on the device.
  size_t stagingFloats = 0;
  if (precision != Precision::F32)
    for (const Upload& u : uploads)
      if (u.matrix) stagingFloats = std::max(stagingFloats, u.numel);
  DeviceArena staging(stagingFloats * sizeof(float), "the weight conversion buffer");
  for (const Upload& u : uploads) {
    char* dst = memory_.at<char>(u.offset);
    if (!u.matrix || precision == Precision::F32) {
      EVIT_CUDA_CHECK(cudaMemcpyAsync(dst, u.src, u.numel * sizeof(float), cudaMemcpyHostToDevice, stream));
      continue;
    }
    // Stream order keeps the next copy into the staging buffer behind this conversion.
    float* tmp = staging.at<float>(0);
    EVIT_CUDA_CHECK(cudaMemcpyAsync(tmp, u.src, u.numel * sizeof(float), cudaMemcpyHostToDevice, stream));
    if (precision == Precision::F16)
      convert<__half>(reinterpret_cast<__half*>(dst), tmp, (long)u.numel, stream);
    else
      convert<__nv_bfloat16>(reinterpret_cast<__nv_bfloat16*>(dst), tmp, (long)u.numel, stream);
  }
  EVIT_CUDA_CHECK(cudaStreamSynchronize(stream));

  auto f = [&](size_t i) { return memory_.at<const float>(uploads[i].offset); };
  auto m = [&](size_t i) { return static_cast<const void*>(memory_.at<const char>(uploads[i].offset)); };
  clsToken = f(cls);
  posEmbed = f(pos);
  patchW = m(pW);
  patchB = f(pB);
  for (const BlockAt& a : at)
    blocks.push_back(DeviceBlockWeights{f(a.n1w), f(a.n1b), m(a.qkvW), f(a.qkvB), m(a.projW), f(a.projB), f(a.n2w),
                                        f(a.n2b), m(a.fc1W), f(a.fc1B), m(a.fc2W), f(a.fc2B)});
  normW = f(nW);
  normB = f(nB);
  headW = m(hW);
  headB = f(hB);
}

}  // namespace evit::cuda
