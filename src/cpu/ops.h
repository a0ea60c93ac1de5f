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
};

// out [M, N] per `ep` from x [M, K], W [N, K] (torch Linear layout) and b [N].
void linear(float* out, const float* x, const float* W, const float* b, int M, int N, int K, Epilogue ep);

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

// x [B, 1 + P, C] = [cls + pos[0], patches[b, i] + pos[1 + i]] from patches [B * P, C].
void assembleTokens(float* x, const float* patches, const float* cls, const float* pos, int B, int P, int C);

// exact-erf GELU in place.
void gelu(float* x, long n);

}  // namespace evit::cpu
