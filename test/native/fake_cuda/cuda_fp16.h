// Host-only stand-in (see cuda_runtime.h): the 16-bit types exist, the emulation runs f32 only.
#pragma once
#include <cstdint>
struct __half {
  uint16_t bits;
};
