// The data movement around the patch-embedding GEMM, as in cuda/patch_embed.cu: im2col before
// it (patchify), class token and position embedding after it (assembleTokens).
#include <algorithm>

#include "ops.h"
#include "thread_pool.h"

namespace evit::cpu {

namespace {

// Row (b, patch) of cols holds that patch's pixels in the conv weight's (c, ky, kx) order;
// copyRow(dst, channel, src offset) fills one kernel row of p values from the image at that offset.
template <class CopyRow>
void patchRows(float* cols, int B, int inChans, int gh, int gw, int p, CopyRow copyRow) {
  const int P = gh * gw, H = gh * p, Wd = gw * p;
  const size_t K = (size_t)inChans * p * p;
  pool().parallelFor((size_t)B * P, [&](size_t r0, size_t r1, int) {
    for (size_t r = r0; r < r1; ++r) {
      const size_t bi = r / P, pi = r % P;
      const int gy = (int)(pi / gw), gx = (int)(pi % gw);
      float* dst = cols + r * K;
      for (int c = 0; c < inChans; ++c)
        for (int ky = 0; ky < p; ++ky)
          copyRow(dst + ((size_t)c * p + ky) * p, c, ((bi * inChans + c) * H + (size_t)gy * p + ky) * Wd + (size_t)gx * p);
    }
  });
}

}  // namespace

void patchify(float* cols, const float* img, int B, int inChans, int gh, int gw, int p) {
  patchRows(cols, B, inChans, gh, gw, p, [&](float* row, int, size_t at) { std::copy(img + at, img + at + p, row); });
}

void patchifyPixels(float* cols, const uint8_t* px, const float* lut, int B, int inChans, int gh, int gw, int p) {
  patchRows(cols, B, inChans, gh, gw, p, [&](float* row, int c, size_t at) {
    const float* level = lut + (size_t)c * 256;
    for (int kx = 0; kx < p; ++kx) row[kx] = level[px[at + kx]];
  });
}

void assembleTokens(float* x, const float* patches, const float* cls, const float* pos, int B, int P, int C) {
  pool().parallelFor(B, [&](size_t b0, size_t b1, int) {
    for (size_t bi = b0; bi < b1; ++bi) {
      float* xb = x + bi * (1 + P) * C;
      for (int c = 0; c < C; ++c) xb[c] = cls[c] + pos[c];
      for (int pi = 0; pi < P; ++pi)
        for (int c = 0; c < C; ++c)
          xb[(size_t)(1 + pi) * C + c] = patches[(bi * P + pi) * C + c] + pos[(size_t)(1 + pi) * C + c];
    }
  });
}

}  // namespace evit::cpu
