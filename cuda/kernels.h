// The CUDA kernels of the forward pass, one file per op in cuda/. Shapes, layouts and
// argument order (outputs first, then inputs, weights, sizes, the stream last) mirror the
// CPU ops in src/cpu/ops.h, which are their references.
// Every launcher checks its launch (launch.cuh) and throws CudaError;
// callers (the CUDA backend, the test binding) validate shapes beforehand.
//
// Element types: the residual stream is always float. GEMM operands and the
// tensors between GEMMs and attention use T = float (the fp32 parity path),
// __half or __nv_bfloat16 (tensor cores, fp32 accumulation).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

namespace evit::cuda {

struct CudaError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

void throwCuda(cudaError_t err, const char* what, const char* file, int line);

#define EVIT_CUDA_CHECK(expr)                                                       \
  do {                                                                              \
    cudaError_t evit_err_ = (expr);                                                 \
    if (evit_err_ != cudaSuccess) ::evit::cuda::throwCuda(evit_err_, #expr, __FILE__, __LINE__); \
  } while (0)

enum class Epilogue {
  Bias,          // out(T) = x·Wᵀ + b
  BiasGelu,      // out(T) = gelu_erf(x·Wᵀ + b)
  BiasResidual,  // out(float) += x·Wᵀ + b
  BiasFloat,     // out(float) = x·Wᵀ + b
  BiasRelu,      // out(T) = max(x·Wᵀ + b, 0), NaN kept
};

// out(T) [rows, C] = LayerNorm(x) for fp32 x; row r of x at x + r · rowStride, so the head
// can normalise only the class-token rows.
template <class T>
void layerNorm(T* out, const float* x, long rowStride, const float* w, const float* b, int rows, int C, float eps,
               cudaStream_t s);

// out(T) = gelu_erf(LayerNorm(x)), the GELU applied in fp32 before the one rounding to T: the
// norm and activation after each sr convolution of shunted attention.
template <class T>
void layerNormGelu(T* out, const float* x, long rowStride, const float* w, const float* b, int rows, int C, float eps,
                   cudaStream_t s);

// fp32 scratch of `floats` elements for split-K GEMMs (partial sums [splits, M, N]); used only by
// launches on the stream that owns it. Empty: no GEMM splits its K.
struct GemmWorkspace {
  float* data = nullptr;
  size_t floats = 0;
};

// out [M, N] per `ep` from x(T) [M, K] and W(T) [N, K] (torch Linear layout), b fp32 [N]. With a
// workspace, half-precision GEMMs of few tiles and long K may split K (cuda/gemm_tiles.h).
template <class T>
void linear(void* out, const T* x, const T* W, const float* b, int M, int N, int K, Epilogue ep, cudaStream_t s,
            const GemmWorkspace& ws = {});

// Multi-head attention over qkv(T) [B, N, 3C] (q | k | v, head h at columns
// h*d .. h*d+d-1 of each part) into out(T) [B, N, C], exact softmax in fp32.
// With clsProbs non-null ([B, heads, N] fp32) the blocks owning query row 0
// also write each head's softmax row 0 (all N columns, class column included).
template <class T>
void attention(T* out, float* clsProbs, const T* qkv, int B, int N, int heads, int headDim, cudaStream_t s);

// Attention of N queries against M keys per image (the CPU op groupAttention), exact softmax
// in fp32 at scale headDim^-½: head h of image b reads q row i at q + (b·N + i)·ldq + h·headDim,
// k and v row j at k + (b·M + j)·ldk + h·headDim (v likewise with ldv), and writes out row i at
// out + (b·N + i)·ldo + h·headDim. With clsProbs non-null ([B, heads, M] fp32) it also writes
// each head's softmax row 0. attention() is this with q | k | v inside qkv and M = N; a head
// group of shunted attention points q and out at a channel slice of wider tensors.
template <class T>
void groupAttention(T* out, long ldo, float* clsProbs, const T* q, long ldq, const T* k, long ldk, const T* v,
                    long ldv, int B, int N, int M, int heads, int headDim, cudaStream_t s);

// Two launches per dropping block (topk_gather_fuse.cu): scores s[j] = mean over heads of
// clsProbs[b, h, 1 + j] summed in head order; the k largest (descending, ties
// to the lower index); out [B, 1 + k + fuse, C] = [x[:,0], x[:, 1 + idx], Σ_{j∉idx} s[j]·x[:, 1 + j]]
// from x [B, N, C]. originsIn [B, N-1] / originsOut [B, k + fuse] track where
// tokens came from; the fused token gets fusedOrigin. orderScratch int32 [B, N-1] and
// scoreScratch fp32 [B, N-1] are device scratch passed from the ranking to the gather.
void topkGatherFuse(float* out, int32_t* originsOut, int32_t* orderScratch, float* scoreScratch, const float* x,
                    const float* clsProbs, const int32_t* originsIn, int B, int N, int heads, int C, int k, bool fuse,
                    int32_t fusedOrigin, cudaStream_t s);

// cols(T) [B * P, inChans * p * p] = the patches of img fp32 [B, inChans, gh*p, gw*p],
// in the order of the flattened conv weight [C, inChans, p, p].
template <class T>
void patchify(T* cols, const float* img, int B, int inChans, int gh, int gw, int p, cudaStream_t s);
// The same from uint8 pixels [B, inChans, gh*p, gw*p], each normalised by lut [inChans, 256]
// (src/backend/pixels.h) on the way.
template <class T>
void patchifyPixels(T* cols, const uint8_t* px, const float* lut, int B, int inChans, int gh, int gw, int p,
                    cudaStream_t s);

// x [B, 1 + P, C] = [cls + pos[0], patches[b, i] + pos[1 + i]] from patches fp32 [B * P, C].
void assembleTokens(float* x, const float* patches, const float* cls, const float* pos, int B, int P, int C,
                    cudaStream_t s);

// ---- Convolutional families (Shunted Transformer). Images between ops are NHWC, which is the
// token layout [B, H·W, C] with token n = y·W + x; only a model's input image is NCHW.

enum class ImageLayout { NCHW, NHWC };

// cols(T) [B·Ho·Wo, convDepth(Cin, k)] = each output pixel's receptive field in (ky, kx, c) order
// (conv_layout.h), zero outside the image (padding) and in the columns past k·k·Cin, from x(In)
// [B, Cin, H, W] or [B, H, W, Cin] per layout; Ho = ⌊(H + 2·pad − k) / stride⌋ + 1. In is float
// (the input image, the residual stream) or T.
template <class T, class In>
void im2col(T* cols, const In* x, ImageLayout layout, int B, int H, int W, int Cin, int k, int stride, int pad,
            cudaStream_t s);

// out [B, Ho, Wo, Cout] (NHWC) per `ep` = conv(x, Wp) + b, stride, zero padding, groups 1: im2col
// into `cols` (B·Ho·Wo·convDepth(Cin, k) elements of scratch), then linear<T>. Wp(T)
// [Cout, convDepth(Cin, k)] is the torch weight relaid by convWeightForGemm. A 1×1 stride-1 conv
// of a T input whose Cin is a whole number of 16-byte chunks is linear<T> itself (cols unused).
template <class T, class In>
void conv2d(void* out, T* cols, const In* x, ImageLayout layout, const T* Wp, const float* b, int B, int H, int W,
            int Cin, int Cout, int k, int stride, int pad, Epilogue ep, cudaStream_t s);

// out(T) [B·H·W, C] = add + b + Σ_taps Wt[tap]·x[p + tap] per channel, then GELU when `gelu`,
// in fp32 with one rounding: the 3×3 depthwise conv (stride 1, zero padding 1) over each image's
// H×W grid, with the add every use of it in the Shunted Transformer has. Pixel p of x at
// x + p·ldx (a channel slice of a wider tensor), of add at add + p·ldAdd (add may be null, or
// equal out with ldAdd == C); out never aliases x. Wt fp32 [9, C] (depthwiseWeightToTaps).
template <class T>
void depthwise3x3(T* out, const T* x, long ldx, const T* add, long ldAdd, const float* Wt, const float* b, int B,
                  int H, int W, int C, bool gelu, cudaStream_t s);

// out(T) [B, C] = the mean of x fp32 [B, N, C] over its N tokens, summed in token order in fp32.
template <class T>
void meanTokens(T* out, const float* x, int B, int N, int C, cudaStream_t s);

// dst(T) = src(float), n elements (weights at upload, and tests).
template <class T>
void convert(T* dst, const float* src, long n, cudaStream_t s);

}  // namespace evit::cuda
