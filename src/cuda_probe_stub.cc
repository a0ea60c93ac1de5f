#include "cuda_probe.h"

namespace evit {

CudaReport probeCuda() {
  CudaReport r;
  r.reason = "this build of evit has no CUDA backend (built without nvcc)";
  return r;
}

}  // namespace evit
