#include "device_weights.h"

#include <algorithm>
#include <utility>

#include "kernels.h"

namespace evit::cuda {

UploadStream::UploadStream() { EVIT_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking)); }
UploadStream::~UploadStream() {
  if (s) cudaStreamDestroy(s);
}

size_t WeightUpload::add(const float* src, size_t n, bool matrix) {
  const size_t elementBytes = matrix && precision_ != Precision::F32 ? 2 : sizeof(float);
  items_.push_back({src, n, layout_.reserve<char>(n * elementBytes), matrix});
  return items_.size() - 1;
}

size_t WeightUpload::add(std::vector<float> owned, bool matrix) {
  owned_.push_back(std::make_unique<std::vector<float>>(std::move(owned)));
  return add(owned_.back()->data(), owned_.back()->size(), matrix);
}

void WeightUpload::upload(cudaStream_t stream, const std::string& what) {
  memory_ = DeviceArena(layout_.bytes(), what);
  // Matrices in a 16-bit type pass through one fp32 staging buffer, converted on the device.
  size_t stagingFloats = 0;
  if (precision_ != Precision::F32)
    for (const Item& u : items_)
      if (u.matrix) stagingFloats = std::max(stagingFloats, u.numel);
  DeviceArena staging(stagingFloats * sizeof(float), "the weight conversion buffer");
  for (const Item& u : items_) {
    char* dst = memory_.at<char>(u.offset);
    if (!u.matrix || precision_ == Precision::F32) {
      EVIT_CUDA_CHECK(cudaMemcpyAsync(dst, u.src, u.numel * sizeof(float), cudaMemcpyHostToDevice, stream));
      continue;
    }
    // Stream order keeps the next copy into the staging buffer behind this conversion.
    float* tmp = staging.at<float>(0);
    EVIT_CUDA_CHECK(cudaMemcpyAsync(tmp, u.src, u.numel * sizeof(float), cudaMemcpyHostToDevice, stream));
    if (precision_ == Precision::F16)
      convert<__half>(reinterpret_cast<__half*>(dst), tmp, (long)u.numel, stream);
    else
      convert<__nv_bfloat16>(reinterpret_cast<__nv_bfloat16*>(dst), tmp, (long)u.numel, stream);
  }
  EVIT_CUDA_CHECK(cudaStreamSynchronize(stream));
  owned_.clear();
}

DeviceWeights::DeviceWeights(const ModelConfig& c, const WeightViews& w, Precision precision, cudaStream_t stream)
    : precision_(precision), upload_(precision) {
  const size_t C = c.embedDim, Hd = c.mlpHidden, P = c.numPatches();
  const size_t patchK = (size_t)c.inChans * c.patchSize * c.patchSize;
  WeightUpload& u = upload_;
  const size_t cls = u.vec(w.clsToken, C), pos = u.vec(w.posEmbed, (1 + P) * C);
  const size_t pW = u.mat(w.patchW, C * patchK), pB = u.vec(w.patchB, C);
  struct BlockAt {
    size_t n1w, n1b, qkvW, qkvB, projW, projB, n2w, n2b, fc1W, fc1B, fc2W, fc2B;
  };
  std::vector<BlockAt> at;
  for (const BlockWeights& b : w.blocks) {
    BlockAt a;
    a.n1w = u.vec(b.norm1W, C);
    a.n1b = u.vec(b.norm1B, C);
    a.qkvW = u.mat(b.qkvW, 3 * C * C);
    a.qkvB = u.vec(b.qkvB, 3 * C);
    a.projW = u.mat(b.projW, C * C);
    a.projB = u.vec(b.projB, C);
    a.n2w = u.vec(b.norm2W, C);
    a.n2b = u.vec(b.norm2B, C);
    a.fc1W = u.mat(b.fc1W, Hd * C);
    a.fc1B = u.vec(b.fc1B, Hd);
    a.fc2W = u.mat(b.fc2W, C * Hd);
    a.fc2B = u.vec(b.fc2B, C);
    at.push_back(a);
  }
  const size_t nW = u.vec(w.normW, C), nB = u.vec(w.normB, C);
  const size_t hW = u.mat(w.headW, (size_t)c.numClasses * C), hB = u.vec(w.headB, c.numClasses);

  u.upload(stream, "the model weights");

  auto f = [&](size_t i) { return u.vector(i); };
  auto m = [&](size_t i) { return u.matrix(i); };
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
