// binding.testing, compiled only into the test flavour of the addon (CMake -DEVIT_TESTING=ON,
// which `npm run build` passes): synchronous single-op exports for the op tests, the GPU
// tests and the microbenchmarks. The shipped binary does not carry them.
#pragma once

#include <napi.h>

namespace evit {

// { ops, cudaHost, cudaOps (only when the addon has the CUDA backend) }
Napi::Object DefineTesting(Napi::Env env);

// The CPU ops (src/testing/ops_binding.cc).
Napi::Object DefineOps(Napi::Env env);
// The CUDA kernels, each run once on the device (cuda/testing/cuda_ops_binding.cc).
Napi::Object DefineCudaOps(Napi::Env env);
// The CUDA kernels' host-side logic run on the CPU (cuda/testing/cuda_host_checks.cc).
Napi::Object DefineCudaHostChecks(Napi::Env env);

}  // namespace evit
