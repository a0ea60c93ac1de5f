// Device and pinned memory. Each allocation is its own host allocation of exactly the
// requested size (so AddressSanitizer reports an access one byte past it), 256-byte aligned
// as cudaMalloc's, filled with 0xFF (NaN in every float type) as uninitialised device memory
// may hold anything; a registry tells device, pinned and pageable addresses apart.
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>

#include "internal.h"

namespace evit_simt {

namespace {

struct Allocation {
  size_t bytes;
  bool pinned;
};

std::mutex mu;
std::map<uintptr_t, Allocation> allocations;
size_t deviceBytes = 0;
long deviceCount = 0, pinnedCount = 0;
size_t h2dBytes = 0, h2dPinnedBytes = 0;
int failingAllocations = 0;
std::atomic<uint64_t> generation{0};

// The allocation holding [p, p + bytes), if any (caller holds mu).
const Allocation* find(const void* p, size_t bytes, uintptr_t* base) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  auto it = allocations.upper_bound(a);
  if (it == allocations.begin()) return nullptr;
  --it;
  if (a + bytes > it->first + it->second.bytes || a + bytes < a) return nullptr;
  *base = it->first;
  return &it->second;
}

// The last range found by this host thread: kernels look up the same few buffers over and over.
struct Cache {
  uintptr_t begin = 0, end = 0;
  bool pinned = false;
  uint64_t generation = ~0ull;
};
thread_local Cache cache;

cudaError_t allocate(void** ptr, size_t bytes, bool pinned) {
  if (!ptr) return recordError(cudaErrorInvalidValue);
  *ptr = nullptr;
  if (cudaError_t s = stickyError()) return recordError(s);
  if (cudaError_t c = checkCaptureSafe()) return recordError(c);
  std::lock_guard<std::mutex> lock(mu);
  if (failingAllocations > 0) {
    --failingAllocations;
    return recordError(cudaErrorMemoryAllocation);
  }
  if (bytes == 0) return cudaSuccess;
  if (!pinned && deviceBytes + bytes > deviceConfig().totalGlobalMem) return recordError(cudaErrorMemoryAllocation);
  void* p = nullptr;
  if (countingBuild()) {
    // One reserved range, so that the counting hooks tell device addresses by one compare.
    if (!(p = regionAllocate(bytes, pinned ? 4096 : 256))) return recordError(cudaErrorMemoryAllocation);
  } else if (posix_memalign(&p, pinned ? 4096 : 256, bytes) != 0) {
    return recordError(cudaErrorMemoryAllocation);
  }
  std::memset(p, 0xFF, bytes);
  allocations[reinterpret_cast<uintptr_t>(p)] = Allocation{bytes, pinned};
  if (pinned) {
    ++pinnedCount;
  } else {
    ++deviceCount;
    deviceBytes += bytes;
  }
  *ptr = p;
  return cudaSuccess;
}

cudaError_t release(void* ptr, bool pinned) {
  if (!ptr) return cudaSuccess;
  cudaError_t result = stickyError();  // after a sticky error CUDA fails the call; the memory is released anyway
  if (!result) result = checkCaptureSafe();
  std::lock_guard<std::mutex> lock(mu);
  auto it = allocations.find(reinterpret_cast<uintptr_t>(ptr));
  if (it == allocations.end() || it->second.pinned != pinned) return recordError(cudaErrorInvalidValue);
  if (pinned) {
    --pinnedCount;
  } else {
    --deviceCount;
    deviceBytes -= it->second.bytes;
  }
  const size_t bytes = it->second.bytes;
  allocations.erase(it);
  ++generation;
  if (countingBuild())
    regionRelease(ptr, bytes);
  else
    std::free(ptr);
  return result ? recordError(result) : cudaSuccess;
}

// Which side of a copy must be device memory, by kind; cudaMemcpyDefault accepts any.
cudaError_t checkCopy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  if (bytes == 0) return cudaSuccess;
  if (!dst || !src) return cudaErrorInvalidValue;
  const bool dstDevice = isDeviceRange(dst, bytes, false), srcDevice = isDeviceRange(src, bytes, false);
  switch (kind) {
    case cudaMemcpyHostToHost: return dstDevice || srcDevice ? cudaErrorInvalidValue : cudaSuccess;
    case cudaMemcpyHostToDevice: return dstDevice && !srcDevice ? cudaSuccess : cudaErrorInvalidValue;
    case cudaMemcpyDeviceToHost: return srcDevice && !dstDevice ? cudaSuccess : cudaErrorInvalidValue;
    case cudaMemcpyDeviceToDevice: return dstDevice && srcDevice ? cudaSuccess : cudaErrorInvalidValue;
    case cudaMemcpyDefault: return cudaSuccess;
  }
  return cudaErrorInvalidMemcpyDirection;
}

}  // namespace

bool isDeviceRange(const void* p, size_t bytes, bool allowPinned) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  Cache& c = cache;
  if (c.generation == generation.load(std::memory_order_acquire) && a >= c.begin && a + bytes <= c.end &&
      a + bytes >= a)
    return allowPinned || !c.pinned;
  std::lock_guard<std::mutex> lock(mu);
  uintptr_t base = 0;
  const Allocation* al = find(p, bytes, &base);
  if (!al) return false;
  c = Cache{base, base + al->bytes, al->pinned, generation.load()};
  return allowPinned || !al->pinned;
}

void memoryCounters(Counters& c) {
  std::lock_guard<std::mutex> lock(mu);
  c.liveDeviceAllocations = deviceCount;
  c.livePinnedAllocations = pinnedCount;
  c.liveDeviceBytes = deviceBytes;
  c.hostToDeviceBytes = h2dBytes;
  c.hostToDevicePinnedBytes = h2dPinnedBytes;
}

std::vector<std::pair<uintptr_t, size_t>> liveAllocations() {
  std::lock_guard<std::mutex> lock(mu);
  std::vector<std::pair<uintptr_t, size_t>> v;
  v.reserve(allocations.size());
  for (const auto& [p, a] : allocations) v.emplace_back(p, a.bytes);
  return v;
}

bool isPinned(const void* p) {
  std::lock_guard<std::mutex> lock(mu);
  uintptr_t base = 0;
  const Allocation* al = find(p, 1, &base);
  return al && al->pinned;
}

namespace {
std::mutex copyMu;
std::vector<CopyRecord> copies;
}  // namespace

void appendCopyRecord(const CopyRecord& r) {
  std::lock_guard<std::mutex> lock(copyMu);
  copies.push_back(r);
}

std::vector<CopyRecord> copyRecords() {
  std::lock_guard<std::mutex> lock(copyMu);
  return copies;
}

void clearCopyRecords() {
  std::lock_guard<std::mutex> lock(copyMu);
  copies.clear();
}

void failAllocations(int count) {
  std::lock_guard<std::mutex> lock(mu);
  failingAllocations = count;
}

void freeAllMemory() {
  std::lock_guard<std::mutex> lock(mu);
  if (countingBuild())
    regionReset();
  else
    for (auto& [p, a] : allocations) std::free(reinterpret_cast<void*>(p));
  allocations.clear();
  deviceBytes = 0;
  deviceCount = pinnedCount = 0;
  ++generation;
}

}  // namespace evit_simt

using namespace evit_simt;

cudaError_t cudaMalloc(void** ptr, size_t bytes) { return allocate(ptr, bytes, false); }
cudaError_t cudaFree(void* ptr) { return release(ptr, false); }
cudaError_t cudaMallocHost(void** ptr, size_t bytes) { return allocate(ptr, bytes, true); }
cudaError_t cudaHostAlloc(void** ptr, size_t bytes, unsigned int) { return allocate(ptr, bytes, true); }
cudaError_t cudaFreeHost(void* ptr) { return release(ptr, true); }

cudaError_t cudaMemGetInfo(size_t* free, size_t* total) {
  if (!free || !total) return recordError(cudaErrorInvalidValue);
  std::lock_guard<std::mutex> lock(mu);
  *total = deviceConfig().totalGlobalMem;
  *free = *total - deviceBytes;
  return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t stream) {
  if (cudaError_t e = checkCopy(dst, src, bytes, kind)) return recordError(e);
  if (bytes && isDeviceRange(dst, bytes, false) && !isDeviceRange(src, bytes, false)) {
    const bool pinned = isDeviceRange(src, bytes, true);
    std::lock_guard<std::mutex> lock(mu);
    h2dBytes += bytes;
    if (pinned) h2dPinnedBytes += bytes;
  }
  CopyRecord rec;
  const bool dstDevice = isDeviceRange(dst, 1, false), srcDevice = isDeviceRange(src, 1, false);
  rec.kind = dstDevice ? (srcDevice ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice)
                       : (srcDevice ? cudaMemcpyDeviceToHost : cudaMemcpyHostToHost);
  rec.bytes = bytes;
  rec.hostPinned = isPinned(dstDevice ? src : dst);
  return submit(stream, Node{"cudaMemcpyAsync", [=](bool fromGraph) {
                               CopyRecord r = rec;
                               r.fromGraph = fromGraph;
                               if (bytes) appendCopyRecord(r);
                               if (bytes) std::memmove(dst, src, bytes);
                               return cudaSuccess;
                             }});
}

cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  if (cudaError_t c = checkCaptureSafe()) return recordError(c);
  if (cudaError_t e = cudaMemcpyAsync(dst, src, bytes, kind, nullptr)) return e;
  synchronisationPoint();
  if (cudaError_t s = stickyError()) return recordError(s);
  return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t stream) {
  if (bytes && !isDeviceRange(dst, bytes, false)) return recordError(cudaErrorInvalidValue);
  return submit(stream, Node{"cudaMemsetAsync", [=](bool) {
                               if (bytes) std::memset(dst, value, bytes);
                               return cudaSuccess;
                             }});
}

cudaError_t cudaMemset(void* dst, int value, size_t bytes) {
  if (cudaError_t c = checkCaptureSafe()) return recordError(c);
  return cudaMemsetAsync(dst, value, bytes, nullptr);
}
