// Reports CUDA devices through the statically linked runtime; a machine without
// a driver gets a reason, not a load failure.
#include <cuda_runtime.h>

#include <string>

#include "../src/cuda_probe.h"

namespace evit {

CudaReport probeCuda() {
  CudaReport r;
  r.compiled = true;
  cudaRuntimeGetVersion(&r.runtimeVersion);
  cudaError_t e = cudaDriverGetVersion(&r.driverVersion);
  if (e != cudaSuccess || r.driverVersion == 0) {
    r.reason = "no NVIDIA driver found";
    return r;
  }
  if (r.driverVersion < r.runtimeVersion) {
    r.reason = "the NVIDIA driver supports CUDA " + std::to_string(r.driverVersion / 1000) + "." +
               std::to_string(r.driverVersion % 1000 / 10) + " but this build needs " +
               std::to_string(r.runtimeVersion / 1000) + "." + std::to_string(r.runtimeVersion % 1000 / 10);
    return r;
  }
  int count = 0;
  e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0) {
    r.reason = e == cudaSuccess ? "no CUDA device found" : std::string("CUDA error: ") + cudaGetErrorString(e);
    return r;
  }
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, i) != cudaSuccess) continue;
    r.devices.push_back(CudaDevice{p.name, p.major, p.minor, p.totalGlobalMem});
  }
  // The CUDA kernels arrive with the CUDA backend; until then devices are reported only.
  r.reason = "the CUDA backend is not implemented in this version; devices are reported only";
  return r;
}

}  // namespace evit
