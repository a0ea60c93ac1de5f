// Device and pinned host memory owned by one execution context: each is a single
// allocation made when the model is prepared, carved at offsets fixed before it is
// made, so a forward pass never allocates.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <string>

namespace evit::cuda {

// Offsets of the buffers of one block of memory; every buffer starts on a 256-byte boundary
// (what cudaMalloc guarantees for a whole allocation, and what vectorised kernels assume).
class ArenaLayout {
 public:
  static constexpr size_t kAlign = 256;
  template <class T>
  size_t reserve(size_t count) {
    const size_t at = bytes_;
    bytes_ += (count * sizeof(T) + kAlign - 1) / kAlign * kAlign;
    return at;
  }
  size_t bytes() const { return bytes_; }

 private:
  size_t bytes_ = 0;
};

// One cudaMalloc, freed on destruction. `what` names it in the out-of-memory message.
class DeviceArena {
 public:
  DeviceArena() = default;
  DeviceArena(size_t bytes, const std::string& what);
  ~DeviceArena();
  DeviceArena(const DeviceArena&) = delete;
  DeviceArena& operator=(const DeviceArena&) = delete;
  DeviceArena(DeviceArena&& o) noexcept : base_(o.base_), bytes_(o.bytes_) { o.base_ = nullptr, o.bytes_ = 0; }
  DeviceArena& operator=(DeviceArena&& o) noexcept;

  template <class T>
  T* at(size_t offset) const {
    return reinterpret_cast<T*>(static_cast<char*>(base_) + offset);
  }
  size_t bytes() const { return bytes_; }

 private:
  void* base_ = nullptr;
  size_t bytes_ = 0;
};

// One cudaMallocHost block: the only host memory the device copies results into
// asynchronously (pageable memory would make the copy synchronous).
class PinnedBlock {
 public:
  PinnedBlock() = default;
  PinnedBlock(size_t bytes, const std::string& what);
  ~PinnedBlock();
  PinnedBlock(const PinnedBlock&) = delete;
  PinnedBlock& operator=(const PinnedBlock&) = delete;
  PinnedBlock(PinnedBlock&& o) noexcept : base_(o.base_) { o.base_ = nullptr; }
  PinnedBlock& operator=(PinnedBlock&& o) noexcept;

  template <class T>
  T* at(size_t offset) const {
    return reinterpret_cast<T*>(static_cast<char*>(base_) + offset);
  }

 private:
  void* base_ = nullptr;
};

// "123.4 MiB", for messages.
std::string mebibytes(size_t bytes);

}  // namespace evit::cuda
