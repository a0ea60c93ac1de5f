// Shared by the attention ops (cls_attention.cc, group_attention.cc): the heads driver that
// spreads (image, head) pairs and their query rows over the pool, one task's slice of a pair, its
// scratch, and the entry points of the AVX-512 and AVX2 tiles.
#pragma once

#include <cstddef>

namespace evit::cpu {

// One task's share of one (image, head) pair: query rows [i0, i1) of N against M keys.
struct HeadSlice {
  const float* q;  // query row i at q + i*ldq, key row j at k + j*ldk, value row j at v + j*ldv (d floats each)
  const float* k;
  const float* v;
  size_t ldq, ldk, ldv;
  float* o;  // row i of the output at o + i*ldo
  size_t ldo;
  float* clsRow;  // receives softmax row 0 (M floats) when i0 == 0; may be null
  int N, M, d, i0, i1;
  float scale;
};

// Per-task scratch, carved out of one per-worker block allocated once per call.
struct Scratch {
  float* kt;  // [d × npad]: kt[c*npad + j] = k[j][c]; columns M..npad-1 are 0
  float* vp;  // [M × d]:    vp[j*d + c] = v[j][c]
  float* s;   // [R × npad]: scores, then probabilities, of the current row block
  int npad;   // M rounded up to 16, so every row of kt and s starts on a 64-byte boundary
};

constexpr int kRows512 = 6;   // query rows per block: 6×4 zmm accumulators + 4 for kt/v
constexpr int kRowsAvx2 = 6;  // 6×2 ymm accumulators + 2 for kt/v + 1 broadcast

// Multi-head attention of N queries against M keys per image, head h at columns h*d..h*d+d-1
// of q, k, v and out, each read at its own row stride. With clsRows non-null ([B, heads, M]) each
// head's softmax row 0 is written there too. Head dims that are a multiple of 16 run on the SIMD
// tiles; others, and CPUs without AVX2 (or EVIT_CPU_ISA=scalar), on two OpenBLAS GEMMs per block
// of query rows.
struct HeadsView {
  float* out;
  size_t ldo;
  const float *q, *k, *v;
  size_t ldq, ldk, ldv;
  int B, N, M, heads, d;
};
void attendHeads(const HeadsView& a, float* clsRows);

// kt = kᵀ zero-padded to npad columns and vp = v made contiguous, once per task.
void packKv(const HeadSlice& hs, const Scratch& sc);
// Attention for query rows [hs.i0, hs.i1): scores, softmax, P·v; writes softmax row 0 to hs.clsRow.
void attendSlice512(const HeadSlice& hs, const Scratch& sc);
void attendSliceAvx2(const HeadSlice& hs, const Scratch& sc);

}  // namespace evit::cpu
