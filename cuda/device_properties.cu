// The per-device cache behind deviceProperties(): one slot per device id holding a pointer to an
// immutable record, filled under a mutex on first use and read lock-free ever after.
#include "device_properties.h"

#include <atomic>
#include <deque>
#include <mutex>
#include <string>

#include "kernels.h"

namespace evit::cuda {

namespace {

std::mutex fillMutex;
std::deque<DeviceProperties> records;  // never shrinks: a reader may still hold a forgotten record
std::atomic<const DeviceProperties*> slots[kMaxDevices];
std::atomic<uint32_t> generation{1};

int attribute(cudaDeviceAttr what, int device) {
  int v = 0;
  EVIT_CUDA_CHECK(cudaDeviceGetAttribute(&v, what, device));
  return v;
}

}  // namespace

const DeviceProperties& deviceProperties(int device) {
  if (device < 0 || device >= kMaxDevices)
    throw CudaError("device " + std::to_string(device) + " is past the " + std::to_string(kMaxDevices) +
                    " devices the CUDA backend supports");
  if (const DeviceProperties* p = slots[device].load(std::memory_order_acquire)) return *p;
  std::lock_guard<std::mutex> lock(fillMutex);
  if (const DeviceProperties* p = slots[device].load(std::memory_order_acquire)) return *p;
  DeviceProperties d;
  d.device = device;
  d.smCount = attribute(cudaDevAttrMultiProcessorCount, device);
  d.sharedPerBlockOptin = attribute(cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  d.sharedPerSm = attribute(cudaDevAttrMaxSharedMemoryPerMultiprocessor, device);
  d.maxThreadsPerSm = attribute(cudaDevAttrMaxThreadsPerMultiProcessor, device);
  records.push_back(d);
  slots[device].store(&records.back(), std::memory_order_release);
  return records.back();
}

const DeviceProperties& deviceProperties() {
  int device = 0;
  EVIT_CUDA_CHECK(cudaGetDevice(&device));
  return deviceProperties(device);
}

void forgetDeviceProperties() {
  std::lock_guard<std::mutex> lock(fillMutex);
  for (auto& s : slots) s.store(nullptr, std::memory_order_release);
  generation.fetch_add(1, std::memory_order_acq_rel);
}

uint32_t devicePropertiesGeneration() { return generation.load(std::memory_order_acquire); }

}  // namespace evit::cuda
