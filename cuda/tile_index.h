// Index arithmetic of the GEMM and attention tilings, shared by the kernels and the
// host checks (src/cuda_host_checks.cc), which enumerate every block, warp, lane and
// fragment on the CPU to prove that each output element is written exactly once and
// that every shared-memory read finds what the loader stored there.
#pragma once

#include "host_device.h"

namespace evit::cuda {

// ---- Tensor-core GEMM (linear_mma.cu) ---------------------------------------------------
// A block computes a BM × BN tile of out = x·Wᵀ with WM × WN warps; each warp owns a
// (BM/WM) × (BN/WN) sub-tile made of 16 × 8 mma.sync m16n8k16 accumulator fragments.
// K advances in steps of kMmaBK halves; a shared-memory tile row is kMmaBK halves =
// four 16-byte chunks, the unit of cp.async and of one ldmatrix row.
constexpr int kMmaBK = 32;
constexpr int kMmaChunks = kMmaBK / 8;

struct MmaShape {
  int BM, BN, WM, WN;
  EVIT_HD int threads() const { return 32 * WM * WN; }
  EVIT_HD int warpM() const { return BM / WM; }
  EVIT_HD int warpN() const { return BN / WN; }
  EVIT_HD int mi() const { return warpM() / 16; }  // m16 fragments per warp
  EVIT_HD int ni() const { return warpN() / 8; }   // n8 fragments per warp
};

// Accumulator register r (0..3) of an m16n8 fragment held by `lane` (PTX ISA, mma.m16n8k16
// f32 C/D layout): rows lane/4 and lane/4 + 8, columns 2·(lane%4) and +1.
EVIT_HD int mmaAccRow(int lane, int r) { return lane / 4 + (r >= 2 ? 8 : 0); }
EVIT_HD int mmaAccCol(int lane, int r) { return (lane % 4) * 2 + (r & 1); }

// Global output coordinates of accumulator r of fragment (mi, ni) of `lane` in `warp` of block (bm, bn).
EVIT_HD void mmaOutCoord(const MmaShape& s, int bm, int bn, int warp, int mi, int ni, int lane, int r, int& row,
                         int& col) {
  row = bm * s.BM + (warp / s.WN) * s.warpM() + mi * 16 + mmaAccRow(lane, r);
  col = bn * s.BN + (warp % s.WN) * s.warpN() + ni * 8 + mmaAccCol(lane, r);
}

// Shared-memory offset, in elements, of chunk `chunk` of tile row `row`. Rows are 64 bytes,
// so 8 consecutive rows at one chunk would hit the same 4 banks pairwise; XOR-ing the
// chunk with (row/2)%4 spreads the 8 rows an ldmatrix phase reads over all 32 banks.
EVIT_HD int mmaSmemOffset(int row, int chunk) { return row * kMmaBK + ((chunk ^ ((row >> 1) & 3)) * 8); }

// Split-K: `splits` requested for K yield splitTiles k-slices per split (the last one shorter)
// and as many splits as that takes, none empty; split z covers k-slices kt0 .. kt0 + count - 1.
EVIT_HD int mmaSplitTiles(int K, int splits) { return ((K + kMmaBK - 1) / kMmaBK + splits - 1) / splits; }
EVIT_HD int mmaSplitCount(int K, int splitTiles) { return ((K + kMmaBK - 1) / kMmaBK + splitTiles - 1) / splitTiles; }
EVIT_HD void mmaSplitRange(int K, int splitTiles, int z, int& kt0, int& count) {
  kt0 = z * splitTiles;
  const int left = (K + kMmaBK - 1) / kMmaBK - kt0;
  count = left < splitTiles ? left : splitTiles;
}

// The i-th 16-byte chunk thread `tid` copies with cp.async for a tile of `rows` rows.
EVIT_HD void mmaLoadCoord(int tid, int i, int threads, int& row, int& chunk) {
  const int id = tid + i * threads;
  row = id / kMmaChunks;
  chunk = id % kMmaChunks;
}

// ldmatrix.x4 row address of `lane` for A fragment mi at k-step kk (16 halves): lanes 0-15
// give rows 0-15 of k 0-7, lanes 16-31 rows 0-15 of k 8-15, which yields a0..a3 in mma order.
EVIT_HD void mmaLdmatrixA(const MmaShape& s, int warp, int mi, int kk, int lane, int& row, int& chunk) {
  row = (warp / s.WN) * s.warpM() + mi * 16 + lane % 16;
  chunk = kk * 2 + lane / 16;
}

// ldmatrix.x4 row address of `lane` for the W fragments 2·nj and 2·nj + 1 at k-step kk:
// matrices (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15) = b0, b1 of
// fragment 2·nj, then b0, b1 of fragment 2·nj + 1.
EVIT_HD void mmaLdmatrixB(const MmaShape& s, int warp, int nj, int kk, int lane, int& row, int& chunk) {
  const int m = lane / 8;
  row = (warp % s.WN) * s.warpN() + nj * 16 + (m / 2) * 8 + lane % 8;
  chunk = kk * 2 + m % 2;
}

// ---- SIMT GEMM (linear.cu): the fp32 path and the fallback for any shape ------------------
// A 64 × 64 tile per 256-thread block, each thread a 4 × 4 grid of outputs strided by 16 so
// that a warp's stores cover 16 consecutive columns.
constexpr int kSimtBM = 64, kSimtBN = 64, kSimtBK = 16, kSimtThreads = 256;

EVIT_HD void simtOutCoord(int bm, int bn, int tid, int i, int j, int& row, int& col) {
  row = bm * kSimtBM + tid / 16 + 16 * i;
  col = bn * kSimtBN + tid % 16 + 16 * j;
}

// Element e (0..3) of the 64 × 16 slice of x or W that thread `tid` loads per k-step.
EVIT_HD void simtLoadCoord(int tid, int e, int& row, int& k) {
  const int id = tid + e * kSimtThreads;
  row = id / kSimtBK;
  k = id % kSimtBK;
}

// ---- Attention (attention.cu) -----------------------------------------------------------
// Grid (ceil(N / kAttnRows), heads, B); a block owns kAttnRows query rows of one (image,
// head) and walks the keys in chunks of kAttnKeys staged in shared memory.
constexpr int kAttnRows = 16, kAttnKeys = 64, kAttnThreads = 256;
constexpr int kAttnRowsPerThread = kAttnRows * kAttnKeys / kAttnThreads;  // scores per thread per chunk

// Score (row r of the block, key j of the chunk) that thread `tid` computes as its i-th.
EVIT_HD void attnScoreCoord(int tid, int i, int& r, int& j) {
  j = tid % kAttnKeys;
  r = (tid / kAttnKeys) * kAttnRowsPerThread + i;
}

// Output element e of thread `tid` (row r of the block, channel c of the head).
EVIT_HD void attnOutCoord(int tid, int e, int headDim, int& r, int& c) {
  const int id = tid + e * kAttnThreads;
  r = id / headDim;
  c = id % headDim;
}
EVIT_HD int attnOutPerThread(int headDim) { return (kAttnRows * headDim + kAttnThreads - 1) / kAttnThreads; }

// ---- Tensor-core attention (attention_mma.cu) ---------------------------------------------
// A warp owns 16 query rows; a block of W warps walks the keys in chunks of kAttnMmaKeys,
// staged in shared memory (K for the scores, then V for P·V) as rows of d halves.
constexpr int kAttnMmaKeys = 64;

// Row stride of a staged K/V chunk, in halves: d plus a 16-byte pad, or 32 bytes when that
// keeps the stride an odd number of 16-byte units, so the 8 rows an ldmatrix phase reads
// land on 8 different bank groups.
EVIT_HD int attnKvStride(int d) { return d + ((d / 8) % 2 == 0 ? 8 : 16); }

// Row stride of the fp32 score rows: N rounded up to whole key chunks, plus 8 floats so that
// the 8-byte accesses of a half-warp (rows g = 0..3, column pairs t = 0..3) hit distinct banks.
EVIT_HD int attnScoreStride(int N) { return (N + kAttnMmaKeys - 1) / kAttnMmaKeys * kAttnMmaKeys + 8; }

// mma A-fragment register q (0..3), half e (0, 1) of `lane`: row g + 8·(q & 1), column 2t + 8·(q >> 1) + e.
EVIT_HD int mmaFragARow(int lane, int q) { return lane / 4 + 8 * (q & 1); }
EVIT_HD int mmaFragACol(int lane, int q, int e) { return 2 * (lane % 4) + 8 * (q >> 1) + e; }

// ldmatrix.x4 (no transpose) row address of `lane` for K fragments 2·np, 2·np + 1 (keys of the
// chunk) at k-step kk (channels 16·kk ..): the same matrix order as mmaLdmatrixB.
EVIT_HD void attnLdmatrixK(int np, int kk, int lane, int& key, int& chunk) {
  const int m = lane / 8;
  key = np * 16 + (m / 2) * 8 + lane % 8;
  chunk = kk * 2 + m % 2;
}

// ldmatrix.x4.trans row address of `lane` for V fragments (channels 16·np ..) at key step ks:
// matrices (keys 0-7, ch 0-7), (keys 8-15, ch 0-7), (keys 0-7, ch 8-15), (keys 8-15, ch 8-15)
// = b0, b1 of fragment 2·np, then b0, b1 of fragment 2·np + 1.
EVIT_HD void attnLdmatrixV(int np, int ks, int lane, int& key, int& chunk) {
  const int m = lane / 8;
  key = ks * 16 + (m % 2) * 8 + lane % 8;
  chunk = np * 2 + m / 2;
}

}  // namespace evit::cuda
