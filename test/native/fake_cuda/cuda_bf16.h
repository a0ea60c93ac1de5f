// Host-only stand-in (see cuda_runtime.h): the 16-bit types exist, the emulation runs f32 only.
#pragma once
#include <cstdint>
struct __nv_bfloat16 {
  uint16_t bits;
};
