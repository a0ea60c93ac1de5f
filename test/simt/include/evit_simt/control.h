// The emulator's own controls, for tests: the thread schedule, the emulated device's
// properties, the last kernel fault, fault injection for the host code's error paths, and
// per-launch records of what each kernel executed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "runtime_api.h"

namespace evit_simt {

// The order in which a block's runnable threads resume in each round between
// synchronisation points. EVIT_SIMT_SCHEDULE=forward|reverse|random:SEED (default forward).
struct Schedule {
  enum Order { Forward, Reverse, Random } order = Forward;
  uint64_t seed = 0;
};
// Throws std::invalid_argument naming the accepted forms.
Schedule parseSchedule(const std::string& text);
std::string scheduleName(const Schedule& s);
Schedule schedule();
// Overrides EVIT_SIMT_SCHEDULE for later launches of this process. A random schedule's
// orders follow from the seed and the launches since the last setSchedule.
void setSchedule(const Schedule& s);

// The emulated device: one sm_90 device by default. Tests lower the SM count or the shared
// memory opt-in limit to reach the kernels' other tilings at small shapes.
struct DeviceConfig {
  int deviceCount = 1;
  int multiProcessorCount = 132;
  int sharedMemPerBlockOptin = 232448;  // 227 KiB, the sm_90 limit; at most kMaxDynamicShared
  size_t totalGlobalMem = (size_t)80 << 30;
  int driverVersion = 13000;
  int runtimeVersion = 13000;
};
constexpr size_t kMaxDynamicShared = 232448;
DeviceConfig deviceConfig();
void setDeviceConfig(const DeviceConfig& c);

// The message of the most recent kernel fault (barrier misuse, mismatched collective,
// invalid instruction operand), "" if none. Faults are also printed to stderr.
std::string lastFault();
// Clears the sticky error a fault left, as a new CUDA context would; allocations stay.
void clearStickyError();

// Fault injection. A kernel name matches when the pattern is a substring of its demangled
// name (e.g. "attentionMmaKernel"). Failed launches return `error` without running.
void failLaunches(const std::string& kernelPattern, int count, cudaError_t error = cudaErrorLaunchOutOfResources);
// The next stream, event or device synchronisation turns `error` into the sticky error.
void stickyErrorAtNextSync(cudaError_t error);
// The next stream capture ends invalidated (cudaStreamEndCapture fails).
void failNextCapture();
// The next `count` cudaMalloc / cudaMallocHost calls fail with cudaErrorMemoryAllocation.
void failAllocations(int count);
void resetInjection();

struct LaunchRecord {
  std::string kernel;  // demangled, without the parameter list
  dim3 grid, block;
  size_t dynamicSmemBytes = 0;
  bool fromGraph = false;
  cudaError_t result = cudaSuccess;
  uint64_t mma = 0;            // mma.sync instructions (per warp)
  uint64_t ldmatrix = 0;       // ldmatrix instructions (per warp)
  uint64_t ldmatrixBytes = 0;  // shared memory bytes they read
  uint64_t cpAsync = 0;        // cp.async instructions (per thread)
  uint64_t cpAsyncBytes = 0;   // global bytes they read (srcBytes)
  uint64_t barriers = 0;       // completed __syncthreads (per block)
  uint64_t warpCollectives = 0;  // completed shuffles, votes and __syncwarp (per warp)
  // Global memory, counted only in the counting flavour (countingBuild(); test/simt/README.md):
  // bytes the threads asked for (every load and store the compiler kept, cp.async sources
  // included), unique 32-byte sectors the executed blocks touched, and per allocation the
  // sectors from the first to the last one touched, summed (the estimate of the unique sectors
  // of a sampled launch, whose skipped blocks touched what the executed ones did not).
  uint64_t globalReadBytes = 0, globalWriteBytes = 0;
  uint64_t readSectors = 0, writeSectors = 0;
  uint64_t readSpanSectors = 0, writeSpanSectors = 0;
  // Per block its unique sectors, summed over the blocks (scaled under sampling): the traffic
  // between L2 and the SMs when L1 and shared memory serve the reuse inside a block.
  uint64_t blockReadSectors = 0, blockWriteSectors = 0;
  // Blocks executed; under sampling the counts above (not the sectors) are scaled to the grid.
  uint64_t blocksRun = 0;
  bool sampled = false;
  // Event records executed in this process before this launch: events between ops (a
  // profiled pass) tell which op a launch belongs to.
  uint64_t eventsBefore = 0;
};
// Every executed launch (eager or replayed from a graph), oldest first.
std::vector<LaunchRecord> launchRecords();
void clearLaunchRecords();

// Whether this build counts global memory traffic (the "count" flavour, -DEVIT_SIMT_COUNTING).
bool countingBuild();

// Sampling ("dry run"): a launch of more than `threshold` blocks executes only a stratified
// sample. Along each grid dimension the first and the last index are classes of their own
// and `interior` evenly spaced indices stand for the rest; a block's counts are scaled by the
// product of its dimensions' class sizes over their samples. The skipped blocks' outputs are
// left as they were: for counting only. threshold 0 runs everything (the default).
// EVIT_SIMT_SAMPLE=THRESHOLD[:INTERIOR] sets it for the process.
struct Sampling {
  uint64_t threshold = 0;
  int interior = 2;
};
Sampling sampling();
void setSampling(const Sampling& s);

// Host/device copies as they execute (cudaMemcpy*, not memsets), oldest first.
struct CopyRecord {
  cudaMemcpyKind kind = cudaMemcpyDefault;  // as resolved: HostToDevice, DeviceToHost, ...
  size_t bytes = 0;
  bool hostPinned = false;  // the host side is page-locked (cudaMallocHost) memory
  bool fromGraph = false;
};
std::vector<CopyRecord> copyRecords();
void clearCopyRecords();

struct Counters {
  long launchesSubmitted = 0;  // accepted by cudaLaunchKernelEx (eager or captured)
  long launchesExecuted = 0;
  long graphLaunches = 0;
  long capturesCompleted = 0;
  long liveDeviceAllocations = 0;
  long livePinnedAllocations = 0;
  size_t liveDeviceBytes = 0;
  size_t hostToDeviceBytes = 0;        // submitted by cudaMemcpy(Async) from host to device ...
  size_t hostToDevicePinnedBytes = 0;  // ... of which from pinned memory (a true asynchronous DMA on a GPU)
};
Counters counters();

// Demangled name of a kernel (or any function in this process), without parameters.
std::string kernelName(const void* function);

}  // namespace evit_simt
