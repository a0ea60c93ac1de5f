// The model's weights on the device, uploaded once when the model is prepared: GEMM
// matrices in the compute type, everything added or scaled in fp32 (biases, LayerNorm
// parameters, class token, position embedding, depthwise taps). WeightUpload does the upload
// for any family; DeviceWeights is the DeiT/EViT family's set.
#pragma once

#include <cuda_runtime.h>

#include <memory>
#include <string>
#include <vector>

#include "../src/backend/backend.h"
#include "../src/backend/cuda_backend.h"
#include "device_arena.h"

namespace evit::cuda {

// A stream for the weight upload, destroyed however the model's constructor ends.
struct UploadStream {
  cudaStream_t s = nullptr;
  UploadStream();
  ~UploadStream();
  UploadStream(const UploadStream&) = delete;
  UploadStream& operator=(const UploadStream&) = delete;
};

// Host tensors gathered into one device block: vectors copied as fp32, matrices converted to the
// compute type on the device (through one fp32 staging buffer). Each add returns the tensor's
// index; its device address is vector() / matrix() of that index once upload() has run.
class WeightUpload {
 public:
  explicit WeightUpload(Precision precision) : precision_(precision) {}
  size_t vec(const float* src, size_t n) { return add(src, n, false); }
  size_t mat(const float* src, size_t n) { return add(src, n, true); }
  // A host copy made for the device (a relaid weight), kept until the upload.
  size_t vec(std::vector<float> owned) { return add(std::move(owned), false); }
  size_t mat(std::vector<float> owned) { return add(std::move(owned), true); }
  // Allocates the block (`what` names it in an out-of-memory error), copies and converts on
  // `stream` and waits: the host sources may be freed afterwards.
  void upload(cudaStream_t stream, const std::string& what);
  const float* vector(size_t i) const { return memory_.at<const float>(items_[i].offset); }
  const void* matrix(size_t i) const { return memory_.at<const char>(items_[i].offset); }
  size_t bytes() const { return memory_.bytes(); }

 private:
  struct Item {
    const float* src;
    size_t numel, offset;
    bool matrix;
  };
  size_t add(const float* src, size_t n, bool matrix);
  size_t add(std::vector<float> owned, bool matrix);

  Precision precision_;
  ArenaLayout layout_;
  std::vector<Item> items_;
  std::vector<std::unique_ptr<std::vector<float>>> owned_;
  DeviceArena memory_;
};

struct DeviceBlockWeights {
  const float *norm1W, *norm1B;
  const void* qkvW;  // compute type, [3C, C]
  const float* qkvB;
  const void* projW;  // [C, C]
  const float* projB;
  const float *norm2W, *norm2B;
  const void* fc1W;  // [H, C]
  const float* fc1B;
  const void* fc2W;  // [C, H]
  const float* fc2B;
};

class DeviceWeights {
 public:
  // Copies and converts on `stream` and waits for it: the host views may be freed on return.
  DeviceWeights(const ModelConfig& cfg, const WeightViews& host, Precision precision, cudaStream_t stream);

  Precision precision() const { return precision_; }
  size_t bytes() const { return upload_.bytes(); }

  const float* clsToken = nullptr;  // [C]
  const float* posEmbed = nullptr;  // [(1 + P) * C]
  const void* patchW = nullptr;     // compute type, [C, inChans * p * p]
  const float* patchB = nullptr;
  std::vector<DeviceBlockWeights> blocks;
  const float *normW = nullptr, *normB = nullptr;
  const void* headW = nullptr;  // compute type, [classes, C]
  const float* headB = nullptr;

 private:
  Precision precision_;
  WeightUpload upload_;
};

}  // namespace evit::cuda
