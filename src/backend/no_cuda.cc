// The CUDA backend's face in a build without nvcc (and in every node-gyp build): the probe says
// why there is no CUDA, and asking for the backend is a clear error, not a missing symbol.
#include <stdexcept>

#include "cuda_backend.h"

namespace evit {

namespace {
constexpr const char* kNoCuda = "this build of evit has no CUDA backend (built without nvcc)";
}

CudaReport probeCuda() {
  CudaReport r;
  r.reason = kNoCuda;
  return r;
}

std::shared_ptr<PreparedModel> makeCudaModel(const ModelConfig&, const HostWeights&, const CudaOptions&) {
  throw std::runtime_error(std::string(kNoCuda) +
                           "; rebuild with the CUDA toolkit installed or use device: 'cpu'");
}

std::shared_ptr<PreparedModel> makeCudaShuntedModel(const ShuntedConfig&, const HostWeights&, const CudaOptions&) {
  throw std::runtime_error(std::string(kNoCuda) +
                           "; rebuild with the CUDA toolkit installed or use device: 'cpu'");
}

}  // namespace evit
