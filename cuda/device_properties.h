// What the launchers ask of the device (SM count, shared-memory limits, threads per SM), read
// from the runtime once per device and then served by one atomic load: a launch, eager or
// captured into a graph, makes no attribute calls and takes no lock.
#pragma once

#include <cstdint>

namespace evit::cuda {

struct DeviceProperties {
  int device = 0;
  int smCount = 0;
  int sharedPerBlockOptin = 0;  // bytes of dynamic shared memory a block may opt into
  int sharedPerSm = 0;          // bytes of shared memory per SM
  int maxThreadsPerSm = 0;
};

constexpr int kMaxDevices = 64;

// The current device's properties (cudaGetDevice, then the cache); read on first use per device.
const DeviceProperties& deviceProperties();
// Device `device`'s (0 <= device < kMaxDevices, else CudaError).
const DeviceProperties& deviceProperties(int device);

// Forgets every device's properties and every shared-memory limit reserveSharedMemory raised, so
// the next launch reads the device again: after cudaDeviceReset (which drops function attributes)
// and in tests that reconfigure the emulated device. Not to be called while launches are in flight.
void forgetDeviceProperties();

// Bumped by forgetDeviceProperties; caches derived from the properties compare it.
uint32_t devicePropertiesGeneration();

}  // namespace evit::cuda
