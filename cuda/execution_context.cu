#include "execution_context.h"

#include <algorithm>
#include <array>
#include <string>

#include "kernels.h"
#include "linear_internal.h"

namespace evit::cuda {

GraphCache::~GraphCache() {
  for (auto& [key, e] : entries_)
    if (e.exec) cudaGraphExecDestroy(e.exec);
}

GraphCache::Entry& GraphCache::use(const std::vector<int>& key) {
  auto it = entries_.find(key);
  if (it == entries_.end()) {
    if (entries_.size() >= kMaxEntries) {
      auto oldest = std::min_element(entries_.begin(), entries_.end(),
                                     [](const auto& a, const auto& b) { return a.second.lastUse < b.second.lastUse; });
      if (oldest->second.exec) cudaGraphExecDestroy(oldest->second.exec);
      entries_.erase(oldest);
    }
    it = entries_.emplace(key, Entry{}).first;
  }
  it->second.uses++;
  it->second.lastUse = ++clock_;
  return it->second;
}

OpTimer::OpTimer(const std::vector<cudaEvent_t>& events, cudaStream_t stream) : events_(events), stream_(stream) {
  EVIT_CUDA_CHECK(cudaEventRecord(events_[0], stream_));
}

void OpTimer::lap(size_t slot) {
  if (slots_.size() + 1 >= events_.size()) throw CudaError("profile has more laps than the context has events");
  EVIT_CUDA_CHECK(cudaEventRecord(events_[slots_.size() + 1], stream_));
  slots_.push_back(slot);
}

void OpTimer::addTo(std::vector<double>& profile) const {
  for (size_t i = 0; i < slots_.size(); ++i) {
    float ms = 0.0f;
    EVIT_CUDA_CHECK(cudaEventElapsedTime(&ms, events_[i], events_[i + 1]));
    profile.at(slots_[i]) += ms;
  }
}

StreamContext::StreamContext(size_t laps) {
  try {
    // Non-blocking: no implicit ordering with the legacy default stream other code may use.
    EVIT_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    events.assign(1 + laps, nullptr);
    for (cudaEvent_t& e : events) EVIT_CUDA_CHECK(cudaEventCreate(&e));
  } catch (...) {
    for (cudaEvent_t e : events)
      if (e) cudaEventDestroy(e);
    if (stream) cudaStreamDestroy(stream);
    throw;
  }
}

StreamContext::~StreamContext() {
  // The owner has synchronised the stream; teardown errors (runtime unloading at exit) are ignored.
  for (cudaEvent_t e : events)
    if (e) cudaEventDestroy(e);
  if (stream) cudaStreamDestroy(stream);
}

void StreamContext::allocate(const ArenaLayout& d, const ArenaLayout& h, const std::string& what) {
  device = DeviceArena(d.bytes(), what);
  host = PinnedBlock(h.bytes(), what);
}

ExecutionContext::ExecutionContext(const ModelConfig& c, const CudaOptions& o, int index)
    : StreamContext(profileSize(c.depth)) {
  const size_t B = o.maxBatch, C = c.embedDim, P = c.numPatches(), N = 1 + P, rows = B * N;
  const size_t t = o.precision == Precision::F32 ? sizeof(float) : 2;
  const size_t patchK = (size_t)c.inChans * c.patchSize * c.patchSize;
  // Token counts never grow (a reorganising block keeps at most N - 2 plus one fused token),
  // so buffers sized for the first block's N serve every block, and each block's origins fit in B * P.
  ArenaLayout d;
  const size_t imageFloats = B * c.inChans * c.imgH() * c.imgW();
  const size_t oImages = d.reserve<float>(imageFloats);
  const size_t oLut = d.reserve<float>((size_t)c.inChans * 256);
  const size_t oCols = d.reserve<char>(B * P * patchK * t);
  const size_t oS0 = d.reserve<float>(rows * C), oS1 = d.reserve<float>(rows * C);
  const size_t oNormed = d.reserve<char>(rows * C * t);
  const size_t oQkv = d.reserve<char>(rows * 3 * C * t);
  const size_t oAttn = d.reserve<char>(rows * C * t);
  const size_t oHidden = d.reserve<char>(rows * c.mlpHidden * t);
  const size_t oProbs = d.reserve<float>(B * c.numHeads * N);
  const size_t oOrder = d.reserve<int32_t>(B * P), oScores = d.reserve<float>(B * P);
  const size_t oHeadIn = d.reserve<char>(B * C * t);
  const size_t oLogits = d.reserve<float>(B * c.numClasses);
  const size_t oIdentity = d.reserve<int32_t>(B * P);
  const size_t oOrigins = d.reserve<int32_t>((size_t)c.depth * B * P);
  // Split-K partial sums: the most any of the model's half-precision GEMMs takes at up to B images.
  size_t splitFloats = 0;
  if (o.precision != Precision::F32)
    for (const auto [maxRows, n, k] : {std::array<size_t, 3>{B * P, C, patchK}, {rows, 3 * C, C}, {rows, C, C},
                                       {rows, (size_t)c.mlpHidden, C}, {rows, C, (size_t)c.mlpHidden},
                                       {B, (size_t)c.numClasses, C}})
      splitFloats = std::max(splitFloats, linearWorkspaceFloats((int)maxRows, (int)n, (int)k));
  const size_t oSplitK = d.reserve<float>(splitFloats);
  ArenaLayout h;
  const size_t hLogits = h.reserve<float>(B * c.numClasses);
  const size_t hOrigins = h.reserve<int32_t>((size_t)c.depth * B * P);
  const size_t hInput = h.reserve<float>(imageFloats);
  const size_t hLut = h.reserve<float>((size_t)c.inChans * 256);

  allocate(d, h, "execution context " + std::to_string(index) + " (maxBatch " + std::to_string(o.maxBatch) + ")");
  images = device.at<float>(oImages);
  pixels = device.at<uint8_t>(oImages);
  pixelLut = device.at<float>(oLut);
  cols = device.at<void>(oCols);
  stream0 = device.at<float>(oS0);
  stream1 = device.at<float>(oS1);
  normed = device.at<void>(oNormed);
  qkv = device.at<void>(oQkv);
  attn = device.at<void>(oAttn);
  hidden = device.at<void>(oHidden);
  clsProbs = device.at<float>(oProbs);
  reorgOrder = device.at<int32_t>(oOrder);
  reorgScores = device.at<float>(oScores);
  headIn = device.at<void>(oHeadIn);
  logits = device.at<float>(oLogits);
  identity = device.at<int32_t>(oIdentity);
  origins = device.at<int32_t>(oOrigins);
  splitK = {splitFloats ? device.at<float>(oSplitK) : nullptr, splitFloats};
  logitsHost = host.at<float>(hLogits);
  originsHost = host.at<int32_t>(hOrigins);
  inputHost = host.at<void>(hInput);
  pixelLutHost = host.at<float>(hLut);

  std::vector<int32_t> iota(B * P);
  for (size_t i = 0; i < iota.size(); ++i) iota[i] = (int32_t)(i % P);
  EVIT_CUDA_CHECK(cudaMemcpyAsync(identity, iota.data(), iota.size() * sizeof(int32_t), cudaMemcpyHostToDevice, stream));
  EVIT_CUDA_CHECK(cudaStreamSynchronize(stream));
}

}  // namespace evit::cuda
