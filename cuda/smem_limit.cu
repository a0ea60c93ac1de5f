// The per-kernel, per-device record of raised shared-memory limits behind reserveSharedMemory.
#include <map>
#include <mutex>
#include <string>
#include <utility>

#include "smem_limit.cuh"

namespace evit::cuda {

void reserveSharedMemoryFor(const void* kernel, size_t bytes, const char* what) {
  int device = 0;
  EVIT_CUDA_CHECK(cudaGetDevice(&device));
  static std::mutex mutex;
  static std::map<std::pair<const void*, int>, size_t> reserved;
  std::lock_guard<std::mutex> lock(mutex);
  size_t& have = reserved[{kernel, device}];
  if (bytes <= have) return;
  int optin = 0;
  EVIT_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  if (bytes > (size_t)optin)
    throw CudaError(std::string(what) + " needs " + std::to_string(bytes) + " bytes of shared memory per block, " +
                    "this device allows " + std::to_string(optin));
  EVIT_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
  have = bytes;
}

}  // namespace evit::cuda
