#include <cstdio>

#include "device_arena.h"
#include "kernels.h"

namespace evit::cuda {

std::string mebibytes(size_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MiB", bytes / 1048576.0);
  return buf;
}

namespace {

[[noreturn]] void allocationFailed(cudaError_t e, size_t bytes, const std::string& what, const char* where) {
  (void)cudaGetLastError();  // allocation failures are not sticky: leave the error state clean
  throw CudaError(std::string(cudaGetErrorName(e)) + " allocating " + mebibytes(bytes) + " of " + where + " for " +
                  what + ": " + cudaGetErrorString(e));
}

}  // namespace

DeviceArena::DeviceArena(size_t bytes, const std::string& what) : bytes_(bytes) {
  if (bytes == 0) return;
  const cudaError_t e = cudaMalloc(&base_, bytes);
  if (e != cudaSuccess) {
    base_ = nullptr;
    allocationFailed(e, bytes, what, "device memory");
  }
}

DeviceArena::~DeviceArena() {
  if (base_) cudaFree(base_);  // errors at teardown (e.g. the runtime already unloading) are ignored
}

DeviceArena& DeviceArena::operator=(DeviceArena&& o) noexcept {
  if (this != &o) {
    if (base_) cudaFree(base_);
    base_ = o.base_;
    bytes_ = o.bytes_;
    o.base_ = nullptr;
    o.bytes_ = 0;
  }
  return *this;
}

PinnedBlock& PinnedBlock::operator=(PinnedBlock&& o) noexcept {
  if (this != &o) {
    if (base_) cudaFreeHost(base_);
    base_ = o.base_;
    o.base_ = nullptr;
  }
  return *this;
}

PinnedBlock::PinnedBlock(size_t bytes, const std::string& what) {
  if (bytes == 0) return;
  const cudaError_t e = cudaMallocHost(&base_, bytes);
  if (e != cudaSuccess) {
    base_ = nullptr;
    allocationFailed(e, bytes, what, "pinned host memory");
  }
}

PinnedBlock::~PinnedBlock() {
  if (base_) cudaFreeHost(base_);
}

}  // namespace evit::cuda
