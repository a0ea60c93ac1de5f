// binding.cudaHost: CPU runs of the CUDA kernels' host-testable logic (see the .cc).
#pragma once

#include <napi.h>

namespace evit {
Napi::Object DefineCudaHostChecks(Napi::Env env);
}
