// Convolution as im2col + GEMM on NHWC images. With enough output pixels, each task gathers
// one band of pixels' receptive fields into its own scratch (small enough to stay in L2) and
// runs that band's GEMM through linearTile while the columns are hot: a whole-image column
// matrix (9·C floats per pixel for a 3×3 conv) would be written to and read back from memory
// once more. With few pixels (a band or less per thread), all columns are gathered and one
// linear() splits the GEMM by output columns instead.
#include <algorithm>
#include <cstdint>
#include <memory>

#include "ops.h"
#include "thread_pool.h"

namespace evit::cpu {

namespace {

// Grow-only scratch of the calling thread, 64-byte aligned (see groupScratch): one for the
// gathered columns, one for an NCHW input made NHWC.
struct GrowBuffer {
  std::unique_ptr<float[]> buf;
  size_t size = 0;
  float* get(size_t floats) {
    if (floats + 16 > size) {
      buf.reset();
      buf.reset(new float[floats + 16]);  // uninitialised
      size = floats + 16;
    }
    return reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(buf.get()) + 63) & ~(uintptr_t)63);
  }
};

float* convScratch(size_t floats) {
  thread_local GrowBuffer b;
  return b.get(floats);
}

float* imageScratch(size_t floats) {
  thread_local GrowBuffer b;
  return b.get(floats);
}

// Column floats of one band: 512 KiB (a band of 227 pixels of a 3×3 conv over 64 channels),
// within 128 and 512 rows, where OpenBLAS's packing of W per band is amortised.
constexpr size_t kBandFloats = 128 * 1024;
constexpr size_t kMinBandRows = 128, kMaxBandRows = 512;

struct ConvShape {
  int B, H, W, Cin, k, stride, pad, Ho, Wo;
};

// cols [rows, k·k·Cin] = the receptive fields of output pixels [p0, p0 + rows) of the NHWC image
// x, in (ky, kx, c) order, zero outside the image. The taps of one kernel row that fall inside
// the image are one contiguous run of x.
void im2colBand(float* cols, const float* x, const ConvShape& s, size_t p0, int rows) {
  const size_t K = (size_t)s.k * s.k * s.Cin, perImage = (size_t)s.Ho * s.Wo, rowFloats = (size_t)s.k * s.Cin;
  for (int r = 0; r < rows; ++r) {
    const size_t p = p0 + r, b = p / perImage, yx = p % perImage;
    const int oy = (int)(yx / s.Wo), ox = (int)(yx % s.Wo);
    const int ix0 = ox * s.stride - s.pad;
    const int kx0 = std::max(0, -ix0), kx1 = std::min(s.k, s.W - ix0);  // taps inside the image
    float* dst = cols + (size_t)r * K;
    for (int ky = 0; ky < s.k; ++ky, dst += rowFloats) {
      const int iy = oy * s.stride - s.pad + ky;
      if (iy < 0 || iy >= s.H || kx1 <= kx0) {
        std::fill(dst, dst + rowFloats, 0.0f);
        continue;
      }
      std::fill(dst, dst + (size_t)kx0 * s.Cin, 0.0f);
      const float* src = x + ((b * s.H + iy) * s.W + ix0 + kx0) * s.Cin;
      std::copy(src, src + (size_t)(kx1 - kx0) * s.Cin, dst + (size_t)kx0 * s.Cin);
      std::fill(dst + (size_t)kx1 * s.Cin, dst + rowFloats, 0.0f);
    }
  }
}

}  // namespace

void convWeightToHwc(float* Wp, const float* W, int Cout, int Cin, int k) {
  for (int o = 0; o < Cout; ++o)
    for (int c = 0; c < Cin; ++c)
      for (int t = 0; t < k * k; ++t) Wp[((size_t)o * k * k + t) * Cin + c] = W[((size_t)o * Cin + c) * k * k + t];
}

void conv2d(float* out, const float* x, ImageLayout layout, const float* Wp, const float* b, int B, int H, int W,
            int Cin, int Cout, int k, int stride, int pad, Epilogue ep) {
  const ConvShape s{B, H, W, Cin, k, stride, pad, (H + 2 * pad - k) / stride + 1, (W + 2 * pad - k) / stride + 1};
  const size_t M = (size_t)B * s.Ho * s.Wo, K = (size_t)k * k * Cin;
  ThreadPool& tp = pool();
  if (layout == ImageLayout::NCHW) {
    // The model's input image: made NHWC once (Cin·H·W floats an image), so the gather below
    // copies runs of k·Cin floats instead of k·k·Cin strided single floats.
    float* nhwc = imageScratch((size_t)B * H * W * Cin);
    tp.parallelFor((size_t)B * H, [&](size_t r0, size_t r1, int) {
      for (size_t r = r0; r < r1; ++r) {
        const size_t bi = r / H, y = r % H;
        for (int c = 0; c < Cin; ++c) {
          const float* src = x + ((bi * Cin + c) * H + y) * W;
          float* dst = nhwc + r * W * Cin + c;
          for (int xx = 0; xx < W; ++xx) dst[(size_t)xx * Cin] = src[xx];
        }
      }
    });
    x = nhwc;
  }
  if (k == 1 && stride == 1 && pad == 0) {
    linear(out, x, Wp, b, (int)M, Cout, Cin, ep);
    return;
  }
  const int t = tp.size();
  const size_t bandRows = std::clamp<size_t>(kBandFloats / K, kMinBandRows, kMaxBandRows);
  if (M < (size_t)t * bandRows) {
    // Too few pixels for a band per thread (the sr convs, late stages, small batches): gather
    // them all, then one linear(), which splits its output columns over the threads.
    float* cols = convScratch(M * K);
    tp.parallelFor(M, [&](size_t p0, size_t p1, int) { im2colBand(cols + p0 * K, x, s, p0, (int)(p1 - p0)); });
    linear(out, cols, Wp, b, (int)M, Cout, (int)K, ep);
    return;
  }
  // A whole number of bands per thread, each gathered and multiplied by the task that owns it.
  size_t bands = (M + bandRows - 1) / bandRows;
  bands = (bands + t - 1) / t * t;
  const size_t rowsPerBand = (M + bands - 1) / bands;
  float* scratch = convScratch((size_t)t * rowsPerBand * K);
  tp.parallelTasks(bands, [&](size_t band, int worker) {
    const size_t p0 = band * rowsPerBand;
    if (p0 >= M) return;
    const int rows = (int)std::min(rowsPerBand, M - p0);
    float* cols = scratch + (size_t)worker * rowsPerBand * K;
    im2colBand(cols, x, s, p0, rows);
    linearTile(out + p0 * Cout, cols, Wp, b, rows, Cout, (int)K, ep, 0, Cout);
  });
}

}  // namespace evit::cpu
