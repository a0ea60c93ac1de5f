// CPU kernels of the forward pass. All tensors are row-major float32; every op spreads its
// work over the process pool. Arguments read as in the CUDA kernels (cuda/kernels.h), which
// these are the references of: outputs first, then inputs, weights, then sizes. Shapes are
// trusted here: callers (the forward pass, the test binding) validate them.
#pragma once

#include <cstdint>

namespace evit::cpu {

// out[r] = (x[r] - mean) / sqrt(var + eps) · w + b over rows of length C, row r of x at
// x + r · rowStride; out [rows, C] may alias x when rowStride == C.
void layerNorm(float* out, const float* x, long rowStride, const float* w, const float* b, int rows, int C, float eps);

enum class Epilogue {
  Bias,          // out = x·Wᵀ + b
  BiasGelu,      // out = gelu_erf(x·Wᵀ + b)
  BiasResidual,  // out += x·Wᵀ + b
  BiasRelu,      // out = max(x·Wᵀ + b, 0)
};

// out [M, N] per `ep` from x [M, K], W [N, K] (torch Linear layout) and b [N].
void linear(float* out, const float* x, const float* W, const float* b, int M, int N, int K, Epilogue ep);

// Columns [n0, n1) of linear() over all M rows, on the calling thread only: the GEMM of ops that
// prepare each task's rows themselves (conv2d's im2col bands). out has row stride N.
void linearTile(float* out, const float* x, const float* W, const float* b, int M, int N, int K, Epilogue ep, int n0,
                int n1);

// Multi-head attention over qkv [B, N, 3C] (q | k | v, head h at columns h*d..h*d+d-1
// of each part) into out [B, N, C]. With clsScores [B, N-1] non-null it also writes the
// head-mean of the class token's softmax row, its own column removed, not renormalised.
void clsAttention(float* out, float* clsScores, const float* qkv, int B, int N, int heads, int headDim);

// idx [B, k] = indices of the k largest of each row of scores [B, M], by score
// descending, ties to the lower index (NaN ranks below everything).
void topk(int32_t* idx, const float* scores, int B, int M, int k);

// out [B, 1 + k + fuse, C] = [x[:,0], x[:, 1 + idx], Σ_{j∉idx} s[j]·x[:, 1 + j]] from x [B, N, C]
// and scores [B, N-1]. originsIn [B, N-1] / originsOut [B, k + fuse] track where tokens came
// from (either may be null); the fused token gets fusedOrigin.
void gatherFuse(float* out, int32_t* originsOut, const float* x, const float* scores, const int32_t* idx,
                const int32_t* originsIn, int B, int N, int C, int k, bool fuse, int32_t fusedOrigin);

// cols [B * P, inChans * p * p] = the patches of img [B, inChans, gh*p, gw*p], in the order of
// the flattened conv weight [C, inChans, p, p] (im2col of the stride-p patch convolution).
void patchify(float* cols, const float* img, int B, int inChans, int gh, int gw, int p);
// The same from uint8 pixels [B, inChans, gh*p, gw*p]: each is normalised on the way by
// lut [inChans, 256] (src/backend/pixels.h), so cols equal patchify of the fp32 image lut gives.
void patchifyPixels(float* cols, const uint8_t* px, const float* lut, int B, int inChans, int gh, int gw, int p);

// x [B, 1 + P, C] = [cls + pos[0], patches[b, i] + pos[1 + i]] from patches [B * P, C].
void assembleTokens(float* x, const float* patches, const float* cls, const float* pos, int B, int P, int C);

// exact-erf GELU in place.
void gelu(float* x, long n);

// ---- Convolutional families (Shunted Transformer). Images between ops are NHWC, which is the
// token layout [B, H·W, C] with token n = y·W + x; only a model's input image is NCHW.

enum class ImageLayout { NCHW, NHWC };

// Wp [Cout, k, k, Cin] = W [Cout, Cin, k, k] (torch layout) permuted once at load, so conv2d's
// im2col copies whole channel runs of an NHWC image. Wp must not alias W.
void convWeightToHwc(float* Wp, const float* W, int Cout, int Cin, int k);

// out [B, Ho, Wo, Cout] (NHWC) = conv(x, Wp) + b, then ReLU with Epilogue::BiasRelu (Bias or
// BiasRelu only): stride, zero padding, groups 1; x [B, Cin, H, W] or [B, H, W, Cin] per layout;
// Ho = ⌊(H + 2·pad − k) / stride⌋ + 1. im2col of a band of output pixels into per-task scratch,
// then the band's GEMM (linearTile), or of all pixels then linear() when there are few; a 1×1
// stride-1 conv is linear() itself.
void conv2d(float* out, const float* x, ImageLayout layout, const float* Wp, const float* b, int B, int H, int W,
            int Cin, int Cout, int k, int stride, int pad, Epilogue ep);

// Wt [9, C] = W [C, 1, 3, 3] (torch depthwise layout), tap-major so channels are contiguous.
// Wt must not alias W.
void depthwiseWeightToTaps(float* Wt, const float* W, int C);

// out[p] = add[p] + b + Σ_taps Wt[tap]·x[p + tap] per channel, then GELU when `gelu`: the 3×3
// depthwise conv (stride 1, zero padding 1) over each image's H×W grid of B images. Pixel p of x
// at x + p·ldx (a channel slice of a wider tensor), of add at add + p·ldAdd (add may be null,
// or equal out with ldAdd == C); out [B·H·W, C] contiguous, never aliasing x.
void depthwise3x3(float* out, const float* x, long ldx, const float* add, long ldAdd, const float* Wt, const float* b,
                  int B, int H, int W, int C, bool gelu);

// Attention of N queries against M keys per image, `heads` heads of headDim, exact softmax at
// scale headDim^-½: head h of image b reads q rows at q + (b·N + i)·ldq + h·headDim, k and v rows
// at k + (b·M + j)·ldk + h·headDim (v likewise with ldv), and writes out rows at
// out + (b·N + i)·ldo + h·headDim. One head group of shunted attention, or plain attention.
void groupAttention(float* out, long ldo, const float* q, long ldq, const float* k, long ldk, const float* v, long ldv,
                    int B, int N, int M, int heads, int headDim);

// out [B, C] = the mean of x [B, N, C] over its N tokens.
void meanTokens(float* out, const float* x, int B, int N, int C);

}  // namespace evit::cpu
