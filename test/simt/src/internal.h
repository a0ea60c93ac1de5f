// Emulator internals shared by the runtime, the scheduler and the instruction twins.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "evit_simt/control.h"
#include "evit_simt/device.h"
#include "evit_simt/launch.h"

namespace evit_simt {

struct Site {
  const char* file = nullptr;
  int line = 0;
  bool operator==(const Site& o) const;
  std::string str() const;
};

// What a blocked thread waits at. Warp collectives are everything after Barrier.
enum class WaitKind : uint8_t { None, Barrier, SyncWarp, Shuffle, Vote, Mma, Ldmatrix };
const char* waitName(WaitKind k);

enum class FiberState : uint8_t { Ready, Blocked, Done };

struct CpAsyncCopy {
  void* dst;
  const void* src;
  int srcBytes;
};

// One CUDA thread: its stack and saved context, its coordinates, what it waits at, and its
// cp.async groups (deferred copies, performed when a wait_group retires them).
struct Fiber {
  void* sp = nullptr;
  char* stack = nullptr;  // lowest usable address
  size_t stackBytes = 0;
  void* fakeStack = nullptr;  // ASan's, across switches
  uint3 tid{};
  int linear = 0, warp = 0, lane = 0;
  FiberState state = FiberState::Ready;
  bool started = false, abort = false;
  WaitKind wait = WaitKind::None;
  Site site;
  unsigned mask = 0;
  void* payload = nullptr;
  std::vector<CpAsyncCopy> openGroup;
  std::deque<std::vector<CpAsyncCopy>> committed;  // oldest first
};

// A kernel launch ready to execute: validated configuration and the kernel call.
struct LaunchSpec {
  const void* kernel = nullptr;
  std::string name;
  dim3 grid, block;
  size_t dynamicSmemBytes = 0;
  std::shared_ptr<KernelCall> call;
};

// Runs every block of the launch on the calling host thread; records it. On a fault:
// prints it, sets the sticky error, and returns cudaErrorLaunchFailure (or the fault's code).
cudaError_t executeLaunch(const LaunchSpec& spec, bool fromGraph);

// Inside a running kernel (called from a fiber): the current thread and launch.
Fiber& currentFiber();
bool inKernel();
// The block's dynamic shared memory [base, base + bytes).
unsigned char* sharedBase();
size_t sharedBytes();
// Per-launch counters of the running launch.
LaunchRecord& currentRecord();

// A fault in the running thread: recorded for the launch, then the thread unwinds.
[[noreturn]] void fault(cudaError_t code, const std::string& what, const Site& site);

// Warp collective: the calling lane posts `payload` and waits until every lane of `mask`
// has arrived at the same collective; the last one to arrive calls complete(lanes' fibers).
using CompleteFn = void (*)(Fiber* const* lanes, unsigned mask, void* context);
void warpCollective(WaitKind kind, unsigned mask, void* payload, const Site& site, CompleteFn complete,
                    void* context = nullptr);

// cp.async bookkeeping of the running thread.
void retireCpAsyncGroups(Fiber& f, int keep);

// Device memory registry (memory.cc): whether [p, p + bytes) lies inside one live
// allocation (device, or pinned host memory when allowPinned).
bool isDeviceRange(const void* p, size_t bytes, bool allowPinned);
void memoryCounters(Counters& c);
void freeAllMemory();
// Base and size of every live allocation (device and pinned), by address.
std::vector<std::pair<uintptr_t, size_t>> liveAllocations();
// Whether p is inside a live pinned allocation.
bool isPinned(const void* p);
void appendCopyRecord(const CopyRecord& r);

// Counting (counting.cc): the reserved range allocations come from in the counting flavour,
// and the per-launch tally of global bytes and sectors on this host thread.
void* regionAllocate(size_t bytes, size_t align);
void regionRelease(void* p, size_t bytes);
void regionReset();
void beginCounting();
void pauseCounting();
void resumeCounting();
void countedBytes(uint64_t* read, uint64_t* written);
void endBlockCounting();  // after each block: adds its unique sectors to the per-block sums
void countedBlockSectors(uint64_t* read, uint64_t* written);
void countGlobalRead(const void* p, size_t bytes);
void endCounting(LaunchRecord& r, const std::vector<std::pair<uintptr_t, size_t>>& allocations);

// Runtime state (runtime.cc).
void setStickyError(cudaError_t e, const std::string& fault);
cudaError_t stickyError();
cudaError_t recordError(cudaError_t e);  // the calling thread's last error; returns e
bool consumeLaunchFailure(const std::string& kernel, cudaError_t* error);
size_t dynamicSmemLimit(const void* kernel);  // the kernel's opted-in limit (48 KiB default)
uint64_t nextLaunchOrdinal();
void appendLaunchRecord(LaunchRecord&& record);
void noteEventRecorded();  // an event record executed (LaunchRecord::eventsBefore)

// Stream work (streams.cc): runs now, or is recorded when the stream is capturing.
struct Node {
  std::string what;
  std::function<cudaError_t(bool fromGraph)> run;
};
cudaError_t submit(cudaStream_t stream, Node node);
// A configuration error on a capturing stream invalidates its capture, as CUDA does.
void invalidateCapture(cudaStream_t stream);
// Calls CUDA forbids inside a capture sequence (allocation, synchronous copies, device
// synchronisation): cudaSuccess, or cudaErrorStreamCaptureUnsupported after invalidating
// the captures the calling thread takes part in.
cudaError_t checkCaptureSafe();
// Whether an injected sticky error is due at this synchronisation (then it is set).
void synchronisationPoint();
void streamCounters(Counters& c);
void armCaptureFailure(bool on);

}  // namespace evit_simt
