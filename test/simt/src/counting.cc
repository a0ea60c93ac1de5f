// Global memory traffic of each launch, for the cost model (test/simt/README.md, "Counting").
// The counting flavour compiles the CUDA sources with gcc's ThreadSanitizer instrumentation
// (-fsanitize=thread) but links none of libtsan: every load and store the compiler keeps calls
// one of the __tsan_* hooks below, which count the bytes whose address lies in the emulated
// device memory. That memory is one reserved address range in this flavour (memory.cc), so the
// test is one subtraction and one compare; a bitmap over it, one bit per 32-byte sector, gives
// the unique sectors a launch touched. Outside a running launch the hooks return at once.
// Other flavours link the hooks too (they are never called there) and count nothing.
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <mutex>

#include "internal.h"

namespace evit_simt {

namespace {

// The reserved range: device and pinned allocations are carved from it, bump-allocated.
constexpr size_t kRegionBytes = (size_t)160 << 30;
char* regionBase = nullptr;
size_t regionUsed = 0;  // high-water mark of the bump allocator
std::mutex regionMu;

// What the running launch on this host thread has counted so far.
struct Tally {
  uint64_t readBytes = 0, writeBytes = 0;
  size_t words = 0;  // bitmap words in use (the region's high-water mark when counting began)
  std::vector<uint64_t> readBits, writeBits;
  // The running block's sectors (repeats next to each other dropped), and the sum over the
  // finished blocks of each one's unique sectors: what the SMs pull from L2 when L1 and shared
  // memory serve the reuse inside a block.
  std::vector<uint64_t> blockRead, blockWrite;
  uint64_t blockReadSectors = 0, blockWriteSectors = 0;
};
thread_local Tally* active = nullptr;
thread_local Tally tally;

inline void mark(std::vector<uint64_t>& bits, size_t first, size_t last) {
  for (size_t s = first; s <= last; ++s) bits[s >> 6] |= 1ull << (s & 63);
}

inline void note(std::vector<uint64_t>& v, size_t first, size_t last) {
  for (size_t s = first; s <= last; ++s)
    if (v.empty() || v.back() != s) v.push_back(s);
}

inline void count(const void* p, size_t n, bool write) {
  Tally* t = active;
  if (!t) return;
  const size_t off = (size_t)(static_cast<const char*>(p) - regionBase);
  if (off >= (t->words << 11) || n == 0) return;  // 2048 bytes per bitmap word
  const size_t last = std::min(off + n - 1, (t->words << 11) - 1);
  if (write) {
    t->writeBytes += n;
    mark(t->writeBits, off >> 5, last >> 5);
    note(t->blockWrite, off >> 5, last >> 5);
  } else {
    t->readBytes += n;
    mark(t->readBits, off >> 5, last >> 5);
    note(t->blockRead, off >> 5, last >> 5);
  }
}

uint64_t uniqueCount(std::vector<uint64_t>& v) {
  std::sort(v.begin(), v.end());
  const uint64_t n = (uint64_t)(std::unique(v.begin(), v.end()) - v.begin());
  v.clear();
  return n;
}

uint64_t popcount(const std::vector<uint64_t>& bits, size_t first, size_t last) {
  uint64_t n = 0;
  for (size_t w = first; w < last; ++w) n += (uint64_t)__builtin_popcountll(bits[w]);
  return n;
}

// Sectors from the first to the last one touched inside [begin, end) sectors.
uint64_t span(const std::vector<uint64_t>& bits, size_t begin, size_t end) {
  size_t lo = end, hi = begin;
  for (size_t s = begin; s < end;) {
    if ((s & 63) == 0 && s + 64 <= end && bits[s >> 6] == 0) {
      s += 64;
      continue;
    }
    if (bits[s >> 6] >> (s & 63) & 1) {
      lo = std::min(lo, s);
      hi = s;
    }
    ++s;
  }
  return lo == end ? 0 : hi - lo + 1;
}

}  // namespace

bool countingBuild() {
#if defined(EVIT_SIMT_COUNTING)
  return true;
#else
  return false;
#endif
}

void* regionAllocate(size_t bytes, size_t align) {
  std::lock_guard<std::mutex> lock(regionMu);
  if (!regionBase) {
    void* p = mmap(nullptr, kRegionBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return nullptr;
    regionBase = static_cast<char*>(p);
  }
  const size_t at = (regionUsed + align - 1) / align * align;
  if (at + bytes > kRegionBytes) return nullptr;
  regionUsed = at + bytes;
  return regionBase + at;
}

void regionRelease(void* p, size_t bytes) {
  std::lock_guard<std::mutex> lock(regionMu);
  char* c = static_cast<char*>(p);
  if (c + bytes == regionBase + regionUsed) regionUsed = (size_t)(c - regionBase);  // the newest: reuse its range
  // Whole pages inside the allocation go back to the system; the range stays reserved.
  const uintptr_t lo = ((uintptr_t)c + 4095) & ~(uintptr_t)4095, hi = ((uintptr_t)c + bytes) & ~(uintptr_t)4095;
  if (hi > lo) madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED);
}

void regionReset() {
  std::lock_guard<std::mutex> lock(regionMu);
  if (regionBase) madvise(regionBase, regionUsed, MADV_DONTNEED);
  regionUsed = 0;
}

void beginCounting() {
  if (!countingBuild()) return;
  size_t used;
  {
    std::lock_guard<std::mutex> lock(regionMu);
    used = regionUsed;
  }
  Tally& t = tally;
  t.readBytes = t.writeBytes = 0;
  t.blockReadSectors = t.blockWriteSectors = 0;
  t.blockRead.clear();
  t.blockWrite.clear();
  t.words = (used + 2047) / 2048;
  t.readBits.assign(t.words, 0);
  t.writeBits.assign(t.words, 0);
  active = &t;
}

void pauseCounting() { active = nullptr; }
void resumeCounting() {
  if (countingBuild()) active = &tally;
}

void countedBytes(uint64_t* read, uint64_t* written) {
  *read = tally.readBytes;
  *written = tally.writeBytes;
}

void endBlockCounting() {
  if (!countingBuild()) return;
  Tally& t = tally;
  t.blockReadSectors += uniqueCount(t.blockRead);
  t.blockWriteSectors += uniqueCount(t.blockWrite);
}

void countedBlockSectors(uint64_t* read, uint64_t* written) {
  *read = tally.blockReadSectors;
  *written = tally.blockWriteSectors;
}

void countGlobalRead(const void* p, size_t bytes) { count(p, bytes, false); }

void endCounting(LaunchRecord& r, const std::vector<std::pair<uintptr_t, size_t>>& allocations) {
  active = nullptr;
  if (!countingBuild()) return;
  Tally& t = tally;
  r.readSectors = popcount(t.readBits, 0, t.words);
  r.writeSectors = popcount(t.writeBits, 0, t.words);
  r.readSpanSectors = r.writeSpanSectors = 0;
  const size_t sectors = t.words * 64;
  for (const auto& [base, bytes] : allocations) {
    const size_t off = base - (uintptr_t)regionBase;
    const size_t b = std::min(off / 32, sectors), e = std::min((off + bytes + 31) / 32, sectors);
    r.readSpanSectors += span(t.readBits, b, e);
    r.writeSpanSectors += span(t.writeBits, b, e);
  }
}

}  // namespace evit_simt

using evit_simt::count;

// The hooks gcc's -fsanitize=thread emits (the libtsan ABI), counting instead of checking.
extern "C" {
void __tsan_init() {}
void __tsan_func_entry(void*) {}
void __tsan_func_exit() {}
void __tsan_vptr_update(void**, void*) {}
void __tsan_vptr_read(void**) {}
void __tsan_ignore_thread_begin() {}
void __tsan_ignore_thread_end() {}
void __tsan_read_range(const void* p, unsigned long n) { count(p, n, false); }
void __tsan_write_range(const void* p, unsigned long n) { count(p, n, true); }
#define EVIT_SIMT_TSAN_ACCESS(N)                                                    \
  void __tsan_read##N(const void* p) { count(p, N, false); }                       \
  void __tsan_write##N(const void* p) { count(p, N, true); }                       \
  void __tsan_unaligned_read##N(const void* p) { count(p, N, false); }             \
  void __tsan_unaligned_write##N(const void* p) { count(p, N, true); }             \
  void __tsan_volatile_read##N(const void* p) { count(p, N, false); }              \
  void __tsan_volatile_write##N(const void* p) { count(p, N, true); }              \
  void __tsan_read##N##_pc(const void* p, void*) { count(p, N, false); }           \
  void __tsan_write##N##_pc(const void* p, void*) { count(p, N, true); }
EVIT_SIMT_TSAN_ACCESS(1)
EVIT_SIMT_TSAN_ACCESS(2)
EVIT_SIMT_TSAN_ACCESS(4)
EVIT_SIMT_TSAN_ACCESS(8)
EVIT_SIMT_TSAN_ACCESS(16)
#undef EVIT_SIMT_TSAN_ACCESS

// Atomics: performed sequentially consistent whatever the order asked (stronger is correct),
// each a read and a write of its bytes.
#define EVIT_SIMT_TSAN_ATOMIC(B, T)                                                                   \
  T __tsan_atomic##B##_load(const volatile T* a, int) {                                               \
    count((const void*)a, sizeof(T), false);                                                          \
    return __atomic_load_n(a, __ATOMIC_SEQ_CST);                                                      \
  }                                                                                                   \
  void __tsan_atomic##B##_store(volatile T* a, T v, int) {                                            \
    count((const void*)a, sizeof(T), true);                                                           \
    __atomic_store_n(a, v, __ATOMIC_SEQ_CST);                                                         \
  }                                                                                                   \
  T __tsan_atomic##B##_exchange(volatile T* a, T v, int) {                                            \
    count((const void*)a, sizeof(T), false), count((const void*)a, sizeof(T), true);                  \
    return __atomic_exchange_n(a, v, __ATOMIC_SEQ_CST);                                               \
  }                                                                                                   \
  T __tsan_atomic##B##_fetch_add(volatile T* a, T v, int) {                                           \
    count((const void*)a, sizeof(T), false), count((const void*)a, sizeof(T), true);                  \
    return __atomic_fetch_add(a, v, __ATOMIC_SEQ_CST);                                                \
  }                                                                                                   \
  T __tsan_atomic##B##_fetch_sub(volatile T* a, T v, int) {                                           \
    count((const void*)a, sizeof(T), false), count((const void*)a, sizeof(T), true);                  \
    return __atomic_fetch_sub(a, v, __ATOMIC_SEQ_CST);                                                \
  }                                                                                                   \
  T __tsan_atomic##B##_fetch_and(volatile T* a, T v, int) {                                           \
    count((const void*)a, sizeof(T), false), count((const void*)a, sizeof(T), true);                  \
    return __atomic_fetch_and(a, v, __ATOMIC_SEQ_CST);                                                \
  }                                                                                                   \
  T __tsan_atomic##B##_fetch_or(volatile T* a, T v, int) {                                            \
    count((const void*)a, sizeof(T), false), count((const void*)a, sizeof(T), true);                  \
    return __atomic_fetch_or(a, v, __ATOMIC_SEQ_CST);                                                 \
  }                                                                                                   \
  T __tsan_atomic##B##_fetch_xor(volatile T* a, T v, int) {                                           \
    count((const void*)a, sizeof(T), false), count((const void*)a, sizeof(T), true);                  \
    return __atomic_fetch_xor(a, v, __ATOMIC_SEQ_CST);                                                \
  }                                                                                                   \
  T __tsan_atomic##B##_fetch_nand(volatile T* a, T v, int) {                                          \
    count((const void*)a, sizeof(T), false), count((const void*)a, sizeof(T), true);                  \
    return __atomic_fetch_nand(a, v, __ATOMIC_SEQ_CST);                                               \
  }                                                                                                   \
  int __tsan_atomic##B##_compare_exchange_strong(volatile T* a, T* c, T v, int, int) {                \
    count((const void*)a, sizeof(T), false), count((const void*)a, sizeof(T), true);                  \
    return __atomic_compare_exchange_n(a, c, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);           \
  }                                                                                                   \
  int __tsan_atomic##B##_compare_exchange_weak(volatile T* a, T* c, T v, int, int) {                  \
    count((const void*)a, sizeof(T), false), count((const void*)a, sizeof(T), true);                  \
    return __atomic_compare_exchange_n(a, c, v, true, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);            \
  }                                                                                                   \
  T __tsan_atomic##B##_compare_exchange_val(volatile T* a, T c, T v, int, int) {                      \
    count((const void*)a, sizeof(T), false), count((const void*)a, sizeof(T), true);                  \
    __atomic_compare_exchange_n(a, &c, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);                 \
    return c;                                                                                         \
  }
EVIT_SIMT_TSAN_ATOMIC(8, unsigned char)
EVIT_SIMT_TSAN_ATOMIC(16, unsigned short)
EVIT_SIMT_TSAN_ATOMIC(32, unsigned int)
EVIT_SIMT_TSAN_ATOMIC(64, unsigned long long)
#undef EVIT_SIMT_TSAN_ATOMIC
void __tsan_atomic_thread_fence(int) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
void __tsan_atomic_signal_fence(int) { __atomic_signal_fence(__ATOMIC_SEQ_CST); }
}
