// backendInfo(): what the addon can run on (CPU features, OpenBLAS, the CUDA probe) and the
// native limits and profile slot names, which TypeScript reads instead of keeping copies.
#pragma once

#include <napi.h>

namespace evit {
Napi::Value BackendInfo(const Napi::CallbackInfo& info);
}
