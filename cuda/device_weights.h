// The model's weights on the device, uploaded once when the model is prepared: GEMM
// matrices in the compute type, everything added or scaled in fp32 (biases, LayerNorm
// parameters, class token, position embedding).
#pragma once

#include <cuda_runtime.h>

#include <vector>

#include "../src/backend/backend.h"
#include "../src/backend/cuda_backend.h"
#include "device_arena.h"

namespace evit::cuda {

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
  size_t bytes() const { return memory_.bytes(); }

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
  DeviceArena memory_;
};

}  // namespace evit::cuda
