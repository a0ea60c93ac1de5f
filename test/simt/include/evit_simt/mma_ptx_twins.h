// The emulated twins of cuda/mma_ptx.cuh's inline-PTX wrappers, with the same C++
// signatures (mma_ptx.cuh includes this under EVIT_SIMT instead of its asm). Each call
// site's file and line travel along for fault messages.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "twins.h"

namespace evit::cuda {

__device__ __forceinline__ void cpAsync16(void* dst, const void* src, int srcBytes, const char* file = __builtin_FILE(),
                                          int line = __builtin_LINE()) {
  evit_simt::cpAsync16(dst, src, srcBytes, file, line);
}
__device__ __forceinline__ void cpAsyncCommit(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  evit_simt::cpAsyncCommit(file, line);
}
template <int Pending>
__device__ __forceinline__ void cpAsyncWait(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  evit_simt::cpAsyncWait(Pending, file, line);
}

__device__ __forceinline__ void ldmatrixX1(uint32_t (&r)[1], const void* p, const char* file = __builtin_FILE(),
                                           int line = __builtin_LINE()) {
  evit_simt::ldmatrix(1, false, r, p, file, line);
}
__device__ __forceinline__ void ldmatrixX2(uint32_t (&r)[2], const void* p, const char* file = __builtin_FILE(),
                                           int line = __builtin_LINE()) {
  evit_simt::ldmatrix(2, false, r, p, file, line);
}
__device__ __forceinline__ void ldmatrixX4(uint32_t (&r)[4], const void* p, const char* file = __builtin_FILE(),
                                           int line = __builtin_LINE()) {
  evit_simt::ldmatrix(4, false, r, p, file, line);
}
__device__ __forceinline__ void ldmatrixX1Trans(uint32_t (&r)[1], const void* p, const char* file = __builtin_FILE(),
                                                int line = __builtin_LINE()) {
  evit_simt::ldmatrix(1, true, r, p, file, line);
}
__device__ __forceinline__ void ldmatrixX2Trans(uint32_t (&r)[2], const void* p, const char* file = __builtin_FILE(),
                                                int line = __builtin_LINE()) {
  evit_simt::ldmatrix(2, true, r, p, file, line);
}
__device__ __forceinline__ void ldmatrixX4Trans(uint32_t (&r)[4], const void* p, const char* file = __builtin_FILE(),
                                                int line = __builtin_LINE()) {
  evit_simt::ldmatrix(4, true, r, p, file, line);
}

template <class T>
__device__ __forceinline__ void mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1,
                                         const char* file = __builtin_FILE(), int line = __builtin_LINE());
template <>
__device__ __forceinline__ void mma16816<__half>(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1,
                                                 const char* file, int line) {
  evit_simt::mma16816(evit_simt::MmaType::F16, c, a, b0, b1, file, line);
}
template <>
__device__ __forceinline__ void mma16816<__nv_bfloat16>(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                                        uint32_t b1, const char* file, int line) {
  evit_simt::mma16816(evit_simt::MmaType::BF16, c, a, b0, b1, file, line);
}

}  // namespace evit::cuda
