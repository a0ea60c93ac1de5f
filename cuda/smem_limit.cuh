// Dynamic shared memory past the default 48 KiB must be opted into per kernel and device, up
// to what the device allows; past that, a clear error instead of a failed launch.
#pragma once

#include <cstddef>

#include "kernels.h"

namespace evit::cuda {

// Raises the kernel's limit on the current device once (remembered per kernel and device in a
// table read without a lock, so later launches, and launches during graph capture, make no
// attribute calls and take no mutex). forgetDeviceProperties() forgets the limits raised.
void reserveSharedMemoryFor(const void* kernel, size_t bytes, const char* what);

template <class Kernel>
void reserveSharedMemory(Kernel kernel, size_t bytes, const char* what) {
  if (bytes > 48 * 1024) reserveSharedMemoryFor(reinterpret_cast<const void*>(kernel), bytes, what);
}

}  // namespace evit::cuda
