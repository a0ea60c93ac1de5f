// The per-kernel, per-device record of raised shared-memory limits behind reserveSharedMemory:
// an open-addressing table of atomics, read without a lock (the launch path) and written under
// a mutex (the first launch of a kernel on a device, or one that needs more than before).
#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>

#include "device_properties.h"
#include "smem_limit.cuh"

namespace evit::cuda {

namespace {

// One (kernel, device) pair: the limit raised so far in the low 32 bits, the properties'
// generation it was raised in above them (a limit from before forgetDeviceProperties is stale).
struct Entry {
  std::atomic<const void*> kernel{nullptr};  // published last; never changes once set
  std::atomic<int> device{0};
  std::atomic<uint64_t> reserved{0};
};
constexpr size_t kEntries = 256;  // kernels × devices that need more than 48 KiB; far fewer in practice
Entry table[kEntries];
std::mutex writeMutex;

uint64_t packed(uint32_t generation, size_t bytes) { return (uint64_t)generation << 32 | (uint32_t)bytes; }

size_t slotOf(const void* kernel, int device) {
  return ((reinterpret_cast<uintptr_t>(kernel) >> 4) ^ (uintptr_t)device * 0x9E3779B1u) % kEntries;
}

// The entry of (kernel, device), or the empty one where it would go (nullptr: the table is full).
Entry* find(const void* kernel, int device) {
  for (size_t probe = 0, i = slotOf(kernel, device); probe < kEntries; ++probe, i = (i + 1) % kEntries) {
    const void* k = table[i].kernel.load(std::memory_order_acquire);
    if (!k || (k == kernel && table[i].device.load(std::memory_order_relaxed) == device)) return &table[i];
  }
  return nullptr;
}

bool enough(const Entry* e, const void* kernel, uint32_t generation, size_t bytes) {
  if (!e || e->kernel.load(std::memory_order_acquire) != kernel) return false;
  const uint64_t r = e->reserved.load(std::memory_order_acquire);
  return (uint32_t)(r >> 32) == generation && (r & 0xFFFFFFFFu) >= bytes;
}

}  // namespace

void reserveSharedMemoryFor(const void* kernel, size_t bytes, const char* what) {
  const DeviceProperties& d = deviceProperties();
  const uint32_t generation = devicePropertiesGeneration();
  if (enough(find(kernel, d.device), kernel, generation, bytes)) return;  // the launch path
  if (bytes > (size_t)d.sharedPerBlockOptin)
    throw CudaError(std::string(what) + " needs " + std::to_string(bytes) + " bytes of shared memory per block, " +
                    "this device allows " + std::to_string(d.sharedPerBlockOptin));
  std::lock_guard<std::mutex> lock(writeMutex);
  Entry* e = find(kernel, d.device);
  if (enough(e, kernel, generation, bytes)) return;
  // Limits only grow within a generation, all set under this mutex: the attribute is never
  // lowered below what the table promises.
  EVIT_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
  if (!e) return;  // table full: correct, just not remembered
  e->reserved.store(packed(generation, bytes), std::memory_order_release);
  if (!e->kernel.load(std::memory_order_relaxed)) {
    e->device.store(d.device, std::memory_order_relaxed);
    e->kernel.store(kernel, std::memory_order_release);
  }
}

}  // namespace evit::cuda
