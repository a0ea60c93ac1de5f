// Controls and counters of the host-only CUDA stand-in, for the emulation test.
#pragma once

#include <atomic>
#include <functional>
#include <string>

#include "cuda_runtime.h"

namespace fake_cuda {

// Runs `work` on stream s now, or records it when s is capturing.
void submit(cudaStream_t s, std::function<void()> work);

struct Counters {
  std::atomic<long> kernels{0};        // kernel launches submitted (eager or captured)
  std::atomic<long> executed{0};       // kernels actually run (eager, or replayed from a graph)
  std::atomic<long> graphLaunches{0};
  std::atomic<long> captures{0};
  std::atomic<long> liveAllocations{0};
};
Counters& counters();

// Fault injection: the next `n` kernel launches named `kernel` throw (a launch error), or the
// next synchronisation reports a sticky error from then on, or the next capture fails.
void failLaunches(const std::string& kernel, int n);
void stickyErrorAtNextSync(cudaError_t e);
void failNextCapture();
void reset();

}  // namespace fake_cuda
