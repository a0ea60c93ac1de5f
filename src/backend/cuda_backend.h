// The CUDA backend as the binding sees it: what the probe found, the backend's options and its
// factory. cuda/ implements these when nvcc is found; src/backend/no_cuda.cc otherwise.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "backend.h"
#include "host_weights.h"
#include "shunted.h"

namespace evit {

struct CudaDevice {
  std::string name;
  int major = 0, minor = 0;
  size_t memoryBytes = 0;
};

struct CudaReport {
  bool compiled = false;   // the addon was built with the CUDA backend
  bool available = false;  // a usable device and a new-enough driver are present
  std::string reason;      // why not, when !available
  int driverVersion = 0, runtimeVersion = 0;
  std::vector<CudaDevice> devices;
};

CudaReport probeCuda();

// Compute type of the GEMMs and attention; the residual stream, LayerNorm statistics,
// softmax and all accumulation stay fp32 in every precision.
enum class Precision { F32, F16, BF16 };

inline const char* precisionName(Precision p) {
  return p == Precision::F32 ? "f32" : p == Precision::F16 ? "f16" : "bf16";
}

struct CudaOptions {
  Precision precision = Precision::BF16;
  // Images per pass the activation arenas are sized for (1..Limits::kMaxBatch); larger batches
  // run in chunks of this size.
  int maxBatch = 64;
  // Execution contexts (stream + arena + pinned buffers), 1..Limits::kMaxStreams: how many
  // batches can be in flight at once.
  int streams = 2;
};

// Uploads the weights (the host copy may be released afterwards) and allocates every
// context's arena. Throws std::runtime_error naming the CUDA error, or the reason this
// build or this machine cannot run CUDA.
std::shared_ptr<PreparedModel> makeCudaModel(const ModelConfig& cfg, const HostWeights& weights,
                                             const CudaOptions& options);
// The same for a Shunted Transformer (cfg has passed validateShuntedConfig); also throws when a
// stage's attention needs more than the device's kernels take (head dim, shared memory).
std::shared_ptr<PreparedModel> makeCudaShuntedModel(const ShuntedConfig& cfg, const HostWeights& weights,
                                                    const CudaOptions& options);

}  // namespace evit
