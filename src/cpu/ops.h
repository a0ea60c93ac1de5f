// CPU kernels of the forward pass. All tensors are row-major float32; every op
// spreads its work over the process pool. Shapes are trusted here: callers
// (the forward pass and the test binding) validate them.
#pragma once

#include <cstdint>

namespace evit::cpu {

// out[r] = (x[r] - mean) / sqrt(var + eps) * w + b over rows of length C; out may alias x.
void layerNorm(const float* x, float* out, int rows, int C, const float* w, const float* b, float eps);

enum class Epilogue {
  Bias,          // out = x·Wᵀ + b
  BiasGelu,      // out = gelu_erf(x·Wᵀ + b)
  BiasResidual,  // out += x·Wᵀ + b
};

// x: [M, K], W: [N, K] (torch Linear layout), b: [N], out: [M, N].
void linear(const float* x, int M, int K, const float* W, const float* b, int N, float* out, Epilogue ep);

// Multi-head attention over qkv [B, N, 3C] (q | k | v, head h at columns h*d..h*d+d-1
// of each part) into out [B, N, C]. With clsScores [B, N-1] non-null it also writes the
// head-mean of the class token's softmax row, its own column removed, not renormalised.
void clsAttention(const float* qkv, int B, int N, int heads, int headDim, float* out, float* clsScores);

// idx [B, k] = indices of the k largest of each row of scores [B, M], by score
// descending, ties to the lower index (NaN ranks below everything).
void topk(const float* scores, int B, int M, int k, int32_t* idx);

// out [B, 1 + k + fuse, C] = [x[:,0], x[:, 1 + idx], Σ_{j∉idx} s[j]·x[:, 1 + j]] from x [B, N, C]
// and scores [B, N-1]. originsIn [B, N-1] / originsOut [B, k + fuse] track where tokens came
// from (either may be null); the fused token gets fusedOrigin.
void gatherFuse(const float* x, int B, int N, int C, const float* scores, const int32_t* idx, int k, bool fuse,
                float* out, const int32_t* originsIn, int32_t* originsOut, int32_t fusedOrigin);

// x [B, 1 + P, C] = [cls + pos[0], conv_patch(img) + pos[1..]] for img [B, inChans, gh*p, gw*p],
// W [C, inChans*p*p], b [C], pos [(1 + P) * C]. work: B·P·(inChans·p·p + C) floats of scratch.
void patchEmbed(const float* img, int B, int inChans, int gh, int gw, int p, const float* W, const float* b,
                const float* cls, const float* pos, int C, float* x, float* work);

// exact-erf GELU in place.
void gelu(float* x, long n);

enum class FmaWidth { Widest, Avx2, Avx512 };
// Sustained single-precision FMA throughput of `threads` threads over `seconds`, in GFLOP/s;
// 0 when the CPU lacks the instructions. Widest: AVX-512 where present, else AVX2.
double measureFmaPeak(int threads, double seconds, FmaWidth width = FmaWidth::Widest);
bool cpuHasAvx512();

}  // namespace evit::cpu
