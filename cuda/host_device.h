// EVIT_HD marks helpers that run both in kernels and in host C++ (where the host
// checks test them on the CPU): __host__ __device__ under nvcc, nothing otherwise.
#pragma once

#if defined(__CUDACC__)
#define EVIT_HD __host__ __device__ __forceinline__
#else
#define EVIT_HD inline
#endif
