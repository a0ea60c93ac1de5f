// Reports CUDA devices through the statically linked runtime; a machine without a driver
// gets a reason, not a load failure. The CUDA backend runs on device 0 (of those
// CUDA_VISIBLE_DEVICES exposes) when this says it is available.
#include <cuda_runtime.h>

#include <string>

#include "../src/backend/cuda_backend.h"

namespace evit {

namespace {

// Compiled for the same targets as the backend's kernels: whether the device can load it
// is whether this build carries code (SASS or JIT-able PTX) for that device.
__global__ void probeKernel() {}

std::string cudaVersion(int v) { return std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10); }

CudaReport probe() {
  CudaReport r;
  r.compiled = true;
  cudaRuntimeGetVersion(&r.runtimeVersion);
  // With a static runtime this succeeds with 0 when libcuda.so cannot be loaded.
  if (cudaDriverGetVersion(&r.driverVersion) != cudaSuccess || r.driverVersion == 0) {
    r.reason = "no NVIDIA driver found (libcuda.so could not be loaded)";
    return r;
  }
  const std::string tooOld = "the NVIDIA driver is too old: it supports CUDA " + cudaVersion(r.driverVersion) +
                             " but this build of evit needs CUDA " + cudaVersion(r.runtimeVersion) +
                             " (update the driver)";
  // Minor-version compatibility lets a 13.x runtime run on any 13.y driver; a major behind cannot.
  if (r.driverVersion / 1000 < r.runtimeVersion / 1000) {
    r.reason = tooOld;
    return r;
  }
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e == cudaErrorNoDevice || (e == cudaSuccess && count == 0)) {
    r.reason = "no CUDA device found (the driver reports none; check CUDA_VISIBLE_DEVICES)";
    return r;
  }
  if (e == cudaErrorInsufficientDriver) {
    r.reason = tooOld;
    return r;
  }
  if (e != cudaSuccess) {
    r.reason = std::string("CUDA could not be initialised: ") + cudaGetErrorName(e) + ": " + cudaGetErrorString(e);
    return r;
  }
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, i) != cudaSuccess) {
      r.devices.push_back(CudaDevice{"(properties unavailable)", 0, 0, 0});
      continue;
    }
    r.devices.push_back(CudaDevice{p.name, p.major, p.minor, p.totalGlobalMem});
  }
  const CudaDevice& d = r.devices[0];
  const std::string which = "device 0 (" + d.name + ", compute capability " + std::to_string(d.major) + "." +
                            std::to_string(d.minor) + ")";
  if (d.major < 8) {
    r.reason = which + " is older than the compute capability 8.0 (Ampere) evit's CUDA kernels need";
    return r;
  }
  cudaFuncAttributes attrs;
  const cudaError_t image = cudaFuncGetAttributes(&attrs, probeKernel);
  if (image != cudaSuccess) {
    (void)cudaGetLastError();
    r.reason = "this build of evit has no GPU code that runs on " + which + ": " + cudaGetErrorName(image);
    return r;
  }
  r.available = true;
  return r;
}

}  // namespace

CudaReport probeCuda() {
  // Devices and drivers do not come and go under a running process: probe once.
  static const CudaReport report = probe();
  return report;
}

}  // namespace evit
