// __half and __nv_bfloat16 for host C++: 2-byte storage types with CUDA's conversion
// functions. Float → 16-bit conversion is round-to-nearest-even with subnormals, overflow
// to infinity and NaN to the canonical 0x7FFF, bit for bit as CUDA's own conversions.
#pragma once

#include <cstdint>
#include <cstring>

#include "vector_types.h"

namespace evit_simt {

inline uint32_t floatBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float bitsFloat(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline uint16_t floatToHalfBits(float f) {
  const uint32_t x = floatBits(f);
  const uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
  const uint32_t ax = x & 0x7FFFFFFFu;
  if (ax > 0x7F800000u) return 0x7FFFu;  // NaN
  const int e = (int)(ax >> 23) - 127;
  if (e > 15) return sign | 0x7C00u;  // past the largest binade (infinity included)
  const uint32_t m = ax & 0x7FFFFFu;
  if (e >= -14) {
    // Normal: 23 → 10 mantissa bits; a carry out of the mantissa bumps the exponent (to infinity past 65504).
    uint32_t r = ((uint32_t)(e + 15) << 10) | (m >> 13);
    const uint32_t rem = m & 0x1FFFu;
    if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) ++r;
    return sign | (uint16_t)r;
  }
  // Subnormal (or zero): units of 2^-24, the significand shifted right by s ≥ 14 places.
  if (ax == 0) return sign;
  const int s = -(e + 1);
  if (s > 24) return sign;
  const uint32_t M = m | 0x800000u;
  uint32_t r = M >> s;
  const uint32_t rem = M & ((1u << s) - 1u), halfway = 1u << (s - 1);
  if (rem > halfway || (rem == halfway && (r & 1u))) ++r;
  return sign | (uint16_t)r;
}

inline float halfBitsToFloat(uint16_t h) {
  const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1Fu, m = h & 0x3FFu;
  if (e == 0x1F) return bitsFloat(sign | 0x7F800000u | (m << 13));
  if (e != 0) return bitsFloat(sign | ((e + 112) << 23) | (m << 13));
  if (m == 0) return bitsFloat(sign);
  // Subnormal half: m · 2^-24, exact in float.
  const float v = (float)m * 5.9604644775390625e-8f;
  return sign ? -v : v;
}

inline uint16_t floatToBfloat16Bits(float f) {
  const uint32_t x = floatBits(f);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) return 0x7FFFu;  // NaN
  return (uint16_t)((x + 0x7FFFu + ((x >> 16) & 1u)) >> 16);
}

inline float bfloat16BitsToFloat(uint16_t b) { return bitsFloat((uint32_t)b << 16); }

}  // namespace evit_simt

struct __half_raw {
  unsigned short x;
};
struct __nv_bfloat16_raw {
  unsigned short x;
};

struct alignas(2) __half {
  unsigned short __x;
  __half() = default;
  constexpr __half(__half_raw r) : __x(r.x) {}
  __half(float f) : __x(evit_simt::floatToHalfBits(f)) {}
  __half(double d) : __x(evit_simt::floatToHalfBits((float)d)) {}
  operator float() const { return evit_simt::halfBitsToFloat(__x); }
  operator __half_raw() const { return __half_raw{__x}; }
};

struct alignas(2) __nv_bfloat16 {
  unsigned short __x;
  __nv_bfloat16() = default;
  constexpr __nv_bfloat16(__nv_bfloat16_raw r) : __x(r.x) {}
  __nv_bfloat16(float f) : __x(evit_simt::floatToBfloat16Bits(f)) {}
  __nv_bfloat16(double d) : __x(evit_simt::floatToBfloat16Bits((float)d)) {}
  operator float() const { return evit_simt::bfloat16BitsToFloat(__x); }
  operator __nv_bfloat16_raw() const { return __nv_bfloat16_raw{__x}; }
};

// The lower element (x) sits in the low 16 bits, as in a CUDA register pair.
struct alignas(4) __half2 {
  __half x, y;
};
struct alignas(4) __nv_bfloat162 {
  __nv_bfloat16 x, y;
};
using half = __half;
using half2 = __half2;
using nv_bfloat16 = __nv_bfloat16;
using nv_bfloat162 = __nv_bfloat162;

inline unsigned short __half_as_ushort(__half h) { return h.__x; }
inline __half __ushort_as_half(unsigned short u) { return __half(__half_raw{u}); }
inline short __half_as_short(__half h) { return (short)h.__x; }
inline __half __short_as_half(short s) { return __half(__half_raw{(unsigned short)s}); }
inline __half __float2half(float f) { return __ushort_as_half(evit_simt::floatToHalfBits(f)); }
inline __half __float2half_rn(float f) { return __float2half(f); }
inline float __half2float(__half h) { return evit_simt::halfBitsToFloat(h.__x); }
inline __half2 __floats2half2_rn(float lo, float hi) { return __half2{__float2half(lo), __float2half(hi)}; }
inline __half2 __float22half2_rn(float2 v) { return __floats2half2_rn(v.x, v.y); }
inline __half2 __float2half2_rn(float v) { return __floats2half2_rn(v, v); }
inline __half2 __halves2half2(__half lo, __half hi) { return __half2{lo, hi}; }
inline __half2 __half2half2(__half v) { return __half2{v, v}; }
inline float2 __half22float2(__half2 v) { return make_float2(__half2float(v.x), __half2float(v.y)); }
inline float __low2float(__half2 v) { return __half2float(v.x); }
inline float __high2float(__half2 v) { return __half2float(v.y); }
inline __half __low2half(__half2 v) { return v.x; }
inline __half __high2half(__half2 v) { return v.y; }
inline bool __hisnan(__half h) { return (h.__x & 0x7FFFu) > 0x7C00u; }
inline bool __hisinf(__half h) { return (h.__x & 0x7FFFu) == 0x7C00u; }

inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 b) { return b.__x; }
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short u) { return __nv_bfloat16(__nv_bfloat16_raw{u}); }
inline __nv_bfloat16 __float2bfloat16(float f) { return __ushort_as_bfloat16(evit_simt::floatToBfloat16Bits(f)); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __float2bfloat16(f); }
inline float __bfloat162float(__nv_bfloat16 b) { return evit_simt::bfloat16BitsToFloat(b.__x); }
inline __nv_bfloat162 __floats2bfloat162_rn(float lo, float hi) {
  return __nv_bfloat162{__float2bfloat16(lo), __float2bfloat16(hi)};
}
inline __nv_bfloat162 __float22bfloat162_rn(float2 v) { return __floats2bfloat162_rn(v.x, v.y); }
inline __nv_bfloat162 __float2bfloat162_rn(float v) { return __floats2bfloat162_rn(v, v); }
inline __nv_bfloat162 __halves2bfloat162(__nv_bfloat16 lo, __nv_bfloat16 hi) { return __nv_bfloat162{lo, hi}; }
inline float2 __bfloat1622float2(__nv_bfloat162 v) {
  return make_float2(__bfloat162float(v.x), __bfloat162float(v.y));
}
inline float __low2float(__nv_bfloat162 v) { return __bfloat162float(v.x); }
inline float __high2float(__nv_bfloat162 v) { return __bfloat162float(v.y); }
inline __nv_bfloat16 __low2bfloat16(__nv_bfloat162 v) { return v.x; }
inline __nv_bfloat16 __high2bfloat16(__nv_bfloat162 v) { return v.y; }
inline bool __hisnan(__nv_bfloat16 b) { return (b.__x & 0x7FFFu) > 0x7F80u; }
inline bool __hisinf(__nv_bfloat16 b) { return (b.__x & 0x7FFFu) == 0x7F80u; }
