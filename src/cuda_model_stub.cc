// Builds without nvcc: asking for the CUDA backend is a clear error, not a missing symbol.
#include <stdexcept>

#include "cuda_backend.h"

namespace evit {

std::shared_ptr<PreparedModel> makeCudaModel(const ModelConfig&, const HostWeights&, const CudaOptions&) {
  throw std::runtime_error(
      "this build of evit has no CUDA backend (built without nvcc); rebuild with the CUDA toolkit installed "
      "or use device: 'cpu'");
}

}  // namespace evit
