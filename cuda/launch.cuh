// Every kernel launch of the backend goes through launchKernel: cudaLaunchKernelEx is the typed
// runtime call that <<<>>> lowers to, so its configuration errors are caught at the launch, named,
// and the same sources run unchanged on the SIMT emulator's runtime (test/simt).
#pragma once

#include <utility>

#include "kernels.h"

namespace evit::cuda {

template <class... Params, class... Args>
void launchKernel(const char* what, void (*kernel)(Params...), dim3 grid, dim3 block, size_t sharedBytes,
                  cudaStream_t s, Args&&... args) {
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = sharedBytes;
  config.stream = s;
  const cudaError_t err = cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...);
  if (err != cudaSuccess) throwCuda(err, what, __FILE__, __LINE__);
}

}  // namespace evit::cuda
