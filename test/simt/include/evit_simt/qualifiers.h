// CUDA's function and variable qualifiers for kernel sources compiled as host C++: one
// compilation is both host and device code, kernels are ordinary functions that the
// emulator calls once per thread, and __shared__ variables live in thread-local storage
// (a block's threads all run on its launching host thread).
#pragma once

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __inline__ inline
// Registers and occupancy are not modelled (test/simt/README.md).
#define __launch_bounds__(...)
#define __restrict__ __restrict
#define __align__(n) __attribute__((aligned(n)))
#define __shared__ thread_local
#define __constant__
#define __managed__
#define __grid_constant__
