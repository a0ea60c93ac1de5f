// What kernel code sees of the execution model: the built-in index variables, barriers,
// warp collectives and votes. Each CUDA thread is a fiber (src/fibers.cc); these calls are
// where it yields. Every synchronising call takes the caller's file and line (defaulted
// at the call site), so a divergent barrier or a mismatched collective is reported there.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "vector_types.h"

// Per host thread: the scheduler sets them before resuming each fiber (a block's fibers all
// run on the launching host thread, so the storage is shared and always current).
extern thread_local uint3 threadIdx;
extern thread_local uint3 blockIdx;
extern thread_local uint3 blockDim;
extern thread_local uint3 gridDim;
constexpr int warpSize = 32;

namespace evit_simt {

enum class Shuffle { Index, Up, Down, Xor };
enum class Vote { Ballot, Any, All };
enum class BarrierReduce { None, Count, And, Or };

int syncthreads(BarrierReduce op, int predicate, const char* file, int line);
void syncwarp(unsigned mask, const char* file, int line);
uint64_t shuffle(Shuffle kind, unsigned mask, uint64_t bits, int arg, int width, const char* file, int line);
unsigned vote(Vote kind, unsigned mask, int predicate, const char* file, int line);
unsigned activeMask();
[[noreturn]] void trap(const char* what, const char* file, int line);

template <class T>
T shuffleAs(Shuffle kind, unsigned mask, T v, int arg, int width, const char* file, int line) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "shuffles move values of at most 8 bytes");
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  bits = shuffle(kind, mask, bits, arg, width, file, line);
  T out;
  std::memcpy(&out, &bits, sizeof(T));
  return out;
}

}  // namespace evit_simt

inline void __syncthreads(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  evit_simt::syncthreads(evit_simt::BarrierReduce::None, 0, file, line);
}
inline int __syncthreads_count(int p, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return evit_simt::syncthreads(evit_simt::BarrierReduce::Count, p, file, line);
}
inline int __syncthreads_and(int p, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return evit_simt::syncthreads(evit_simt::BarrierReduce::And, p, file, line);
}
inline int __syncthreads_or(int p, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return evit_simt::syncthreads(evit_simt::BarrierReduce::Or, p, file, line);
}
inline void __syncwarp(unsigned mask = 0xFFFFFFFFu, const char* file = __builtin_FILE(),
                       int line = __builtin_LINE()) {
  evit_simt::syncwarp(mask, file, line);
}
template <class T>
T __shfl_sync(unsigned mask, T v, int srcLane, int width = warpSize, const char* file = __builtin_FILE(),
              int line = __builtin_LINE()) {
  return evit_simt::shuffleAs(evit_simt::Shuffle::Index, mask, v, srcLane, width, file, line);
}
template <class T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = warpSize, const char* file = __builtin_FILE(),
                 int line = __builtin_LINE()) {
  return evit_simt::shuffleAs(evit_simt::Shuffle::Up, mask, v, (int)delta, width, file, line);
}
template <class T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = warpSize, const char* file = __builtin_FILE(),
                   int line = __builtin_LINE()) {
  return evit_simt::shuffleAs(evit_simt::Shuffle::Down, mask, v, (int)delta, width, file, line);
}
template <class T>
T __shfl_xor_sync(unsigned mask, T v, int laneMask, int width = warpSize, const char* file = __builtin_FILE(),
                  int line = __builtin_LINE()) {
  return evit_simt::shuffleAs(evit_simt::Shuffle::Xor, mask, v, laneMask, width, file, line);
}
inline unsigned __ballot_sync(unsigned mask, int p, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return evit_simt::vote(evit_simt::Vote::Ballot, mask, p, file, line);
}
inline int __any_sync(unsigned mask, int p, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return (int)evit_simt::vote(evit_simt::Vote::Any, mask, p, file, line);
}
inline int __all_sync(unsigned mask, int p, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return (int)evit_simt::vote(evit_simt::Vote::All, mask, p, file, line);
}
inline unsigned __activemask() { return evit_simt::activeMask(); }
[[noreturn]] inline void __trap(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  evit_simt::trap("__trap()", file, line);
}

// A block's threads run one at a time between synchronisation points: there is nothing to fence.
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() {}
inline void __threadfence_system() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
template <class T>
inline T __ldg(const T* p) {
  return *p;
}
long long clock64();
inline void __nanosleep(unsigned) {}

// Atomics: sequential within a block, and safe against launches on other host threads.
template <class T>
inline T atomicAdd(T* p, T v) {
  if constexpr (std::is_floating_point_v<T>) {
    T old = __atomic_load_n(p, __ATOMIC_RELAXED);
    while (!__atomic_compare_exchange_n(p, &old, old + v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
    return old;
  } else {
    return __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
  }
}
template <class T>
inline T atomicSub(T* p, T v) {
  return __atomic_fetch_sub(p, v, __ATOMIC_RELAXED);
}
template <class T>
inline T atomicExch(T* p, T v) {
  return __atomic_exchange_n(p, v, __ATOMIC_RELAXED);
}
template <class T>
inline T atomicCAS(T* p, T compare, T v) {
  __atomic_compare_exchange_n(p, &compare, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
  return compare;
}
template <class T>
inline T atomicMax(T* p, T v) {
  T old = __atomic_load_n(p, __ATOMIC_RELAXED);
  while (old < v && !__atomic_compare_exchange_n(p, &old, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
  }
  return old;
}
template <class T>
inline T atomicMin(T* p, T v) {
  T old = __atomic_load_n(p, __ATOMIC_RELAXED);
  while (old > v && !__atomic_compare_exchange_n(p, &old, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
  }
  return old;
}

// The generic → shared-window conversion: offsets from the start of the block's dynamic
// shared memory (the only shared memory the instruction twins accept).
size_t __cvta_generic_to_shared(const void* p);
