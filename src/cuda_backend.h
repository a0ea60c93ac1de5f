// The CUDA backend as the binding sees it: its options and a factory. The factory is
// built from cuda/cuda_model.cu when nvcc is found, else from src/cuda_model_stub.cc.
#pragma once

#include <memory>

#include "backend.h"
#include "host_weights.h"

namespace evit {

// Compute type of the GEMMs and attention; the residual stream, LayerNorm statistics,
// softmax and all accumulation stay fp32 in every precision.
enum class Precision { F32, F16, BF16 };

inline const char* precisionName(Precision p) {
  return p == Precision::F32 ? "f32" : p == Precision::F16 ? "f16" : "bf16";
}

struct CudaOptions {
  Precision precision = Precision::BF16;
  // Images per pass the activation arenas are sized for; larger batches run in chunks of this size.
  int maxBatch = 64;
  // Execution contexts (stream + arena + pinned buffers): how many batches can be in flight at once.
  int streams = 2;
};

// Uploads the weights (the host copy may be released afterwards) and allocates every
// context's arena. Throws std::runtime_error naming the CUDA error, or the reason this
// build cannot run CUDA.
std::shared_ptr<PreparedModel> makeCudaModel(const ModelConfig& cfg, const HostWeights& weights,
                                             const CudaOptions& options);

}  // namespace evit
