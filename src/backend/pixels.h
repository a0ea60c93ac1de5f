// 8-bit images and their normalisation. A uint8 pixel v of channel c becomes
// lut[c * 256 + v] = fround(fround(v / 255) - mean[c]) / std[c], the arithmetic of
// lib/preprocess.ts (torch's ToTensor + Normalize in float32), so an image sent as uint8 and
// normalised here is bit for bit the fp32 tensor JavaScript would have sent.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "backend.h"

namespace evit {

inline constexpr int kPixelLevels = 256;

// The [channels, 256] table; ArgumentError for a mean or std that is not finite, or a std <= 0.
inline std::vector<float> pixelLut(const float* mean, const float* stdev, int channels) {
  std::vector<float> lut((size_t)channels * kPixelLevels);
  for (int c = 0; c < channels; ++c) {
    const float m = mean[c], s = stdev[c];
    if (!std::isfinite(m)) throw ArgumentError("mean[" + std::to_string(c) + "] must be a finite number, got " + std::to_string(m));
    if (!std::isfinite(s) || !(s > 0.0f))
      throw ArgumentError("std[" + std::to_string(c) + "] must be a finite number > 0, got " + std::to_string(s));
    for (int v = 0; v < kPixelLevels; ++v) {
      // Each step rounded to float, as Math.fround does (v / 255 is computed in double there).
      const float scaled = (float)((double)v / 255.0);
      const float centred = scaled - m;
      lut[(size_t)c * kPixelLevels + v] = centred / s;
    }
  }
  return lut;
}

// dst [n] = lut[channel of i][src[i]] for planar [images, channels, plane] pixels.
inline void expandPixels(float* dst, const uint8_t* src, const float* lut, size_t images, int channels, size_t plane) {
  for (size_t b = 0; b < images; ++b)
    for (int c = 0; c < channels; ++c) {
      const float* t = lut + (size_t)c * kPixelLevels;
      const size_t base = (b * channels + c) * plane;
      for (size_t i = 0; i < plane; ++i) dst[base + i] = t[src[base + i]];
    }
}

}  // namespace evit
