// binding.cudaOps: synchronous single-kernel exports for the GPU test suite. Each copies
// its Float32Array inputs to the device, runs one kernel, and copies the result back.
// Built from cuda_ops_binding.cc with CUDA, from cuda_ops_stub.cc without (every call throws).
#pragma once

#include <napi.h>

namespace evit {
Napi::Object DefineCudaOps(Napi::Env env);
}
