// The one place CUDA errors become C++ exceptions, with enough context to act on.
#include <string>

#include "kernels.h"

namespace evit::cuda {

void throwCuda(cudaError_t err, const char* what, const char* file, int line) {
  // Clear a non-sticky error so the next check does not report this one again.
  cudaGetLastError();
  throw CudaError(std::string("CUDA error ") + cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ") in " +
                  what + " at " + file + ":" + std::to_string(line));
}

}  // namespace evit::cuda
