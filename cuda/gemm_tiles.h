// Which tensor-core GEMM tiling (and how many K splits) linear_mma.cu launches for an M × N × K
// problem: a pure host function of the shape and the device, so that the choice is unit-tested
// on the CPU (test/simt/tests/kernels_test.cc) and the workspace for split-K is sized at load.
//
// The rule (docs/KERNELS.md has the table for DeiT-S), the GPU cost model's wave formula
// (bench/gpu-model/model.js) for one GEMM: for each tiling, blocks = tiles · splits are dealt to
// SMs in waves of slots · SMs, slots being the blocks an SM holds at once (threads, shared memory
// and registers, below). A wave of n blocks on `busy` SMs, the busiest holding r, takes the
// larger of (per unit of K, in units of one SM's multiply-adds)
//     tensor work   r · BM · BN / min(1, r · warps / kSaturatingWarps)
//     L2 traffic    n · (BM + BN) · kL2BalanceFlopsPerByte / min(SMs, busy · kSmL2Share)
// : an SM's tensor cores are shared by its r blocks and fewer than kSaturatingWarps warps leave
// them partly idle; every block pulls its BM- and BN-row panels of x and W from L2, at the chip's
// L2 bandwidth, or what its busy SMs can draw when few are. The cost is the sum over waves,
// divided by the splits; the cheapest (tiling, splits) wins, ties to the bigger tile and fewer
// splits. On Hopper the L2 term dominates full waves of every tiling (mma.sync kernels reach
// about 110 FLOPs per L2 byte of balance, a 128 × 128 tile makes 64), so bigger tiles win unless
// their last wave leaves most SMs idle.
//
// Split-K (deterministic: each split writes fp32 partial sums of its K range into a workspace
// [splits, M, N], a second kernel adds them in split order, adds the bias and applies the
// epilogue) is considered only where the tiles are fewer than the SMs, with at most
// kMaxSplits splits of at least kMinSplitK each and splits · tiles <= SMs.
#pragma once

#include <algorithm>
#include <cstddef>

#include "tile_index.h"

namespace evit::cuda {

enum class MmaTiling { k128x128, k128x64, k64x64 };

struct MmaTileInfo {
  int BM, BN, WM, WN;
  int registers;  // per thread: the budget linear_mma.cu's __launch_bounds__ give ptxas
  const char* name;
};

constexpr int kMmaStages = 3;
// Index by MmaTiling. The register budgets are what mmaMinBlocks (linear_mma.cu) asks ptxas for:
// sm_90 builds use 120, 96 and 76 (128 × 64 unbounded would take 153, so four blocks per SM;
// at 96 it spills 20 bytes to the stack).
constexpr MmaTileInfo kMmaTiles[] = {
    {128, 128, 2, 4, 128, "128x128"},
    {128, 64, 2, 2, 96, "128x64"},
    {64, 64, 2, 2, 80, "64x64"},
};
constexpr int kMmaTilings = 3;
constexpr int kSaturatingWarps = 16;  // 4 per SM sub-partition hide the latency of mma.sync and ldmatrix
// Tensor FLOPs an mma.sync kernel does per byte of L2 bandwidth at balance: 0.62 × 989 TFLOPS
// over about 5.5 TB/s on H100 / H200 (the cost model's figures); and how much more than its
// even share of the chip's L2 bandwidth one SM can draw (64 bytes per clock at 1.98 GHz over
// 5.5 TB/s / 132).
constexpr double kL2BalanceFlopsPerByte = 111.0;
constexpr double kSmL2Share = 3.0;
constexpr int kMaxSplits = 4;
constexpr int kMinSplitK = 256;  // 8 k-slices per split at least
constexpr int kRegistersPerSm = 65536, kMaxBlocksPerSm = 32, kReservedSharedPerBlock = 1024;

inline const MmaTileInfo& tileInfo(MmaTiling t) { return kMmaTiles[(int)t]; }

// Shared memory of one block of tiling t: kMmaStages slices of x and W, 16-bit elements.
inline size_t mmaSharedBytes(MmaTiling t) {
  const MmaTileInfo& i = tileInfo(t);
  return (size_t)kMmaStages * (i.BM + i.BN) * kMmaBK * 2;
}

struct GemmDevice {
  int sms = 132;
  int sharedPerSm = 233472;        // bytes
  int sharedPerBlockOptin = 232448;  // bytes
  int maxThreadsPerSm = 2048;
};

struct GemmPlan {
  MmaTiling tiling = MmaTiling::k64x64;
  int splits = 1;
  long tiles = 0;  // output tiles (blocks = tiles · splits)
  int slots = 0;   // blocks per SM
  long waves = 0;
  double cost = 0;  // the rule's cost per unit of K
};

// Blocks of tiling t one SM holds at once: threads, shared memory (plus the runtime's 1 KiB
// per block) and registers (allocated per warp in units of 256) each bound it.
inline int mmaSlots(MmaTiling t, const GemmDevice& d) {
  const MmaTileInfo& i = tileInfo(t);
  const int threads = 32 * i.WM * i.WN;
  const int regsPerWarp = (i.registers * 32 + 255) / 256 * 256;
  int slots = kMaxBlocksPerSm;
  slots = std::min(slots, d.maxThreadsPerSm / threads);
  slots = std::min(slots, (int)(d.sharedPerSm / (mmaSharedBytes(t) + kReservedSharedPerBlock)));
  slots = std::min(slots, kRegistersPerSm / (regsPerWarp * i.WM * i.WN));
  return std::max(slots, 1);
}

// The rule's plan for tiling t with `splits` splits (splits = 1: none).
inline GemmPlan mmaPlanFor(MmaTiling t, int splits, int M, int N, const GemmDevice& d) {
  const MmaTileInfo& i = tileInfo(t);
  GemmPlan p;
  p.tiling = t;
  p.splits = splits;
  p.tiles = (long)((M + i.BM - 1) / i.BM) * ((N + i.BN - 1) / i.BN);
  p.slots = mmaSlots(t, d);
  const long blocks = p.tiles * splits, perWave = (long)p.slots * d.sms;
  const long full = blocks / perWave, rest = blocks % perWave;
  p.waves = full + (rest ? 1 : 0);
  const int warps = i.WM * i.WN;
  auto waveCost = [&](long n) {
    const long r = (n + d.sms - 1) / d.sms, busy = std::min<long>(n, d.sms);
    const double saturation = std::min(1.0, (double)(r * warps) / kSaturatingWarps);
    const double tensor = (double)r * i.BM * i.BN / saturation;
    const double l2 = (double)n * (i.BM + i.BN) * kL2BalanceFlopsPerByte / std::min((double)d.sms, busy * kSmL2Share);
    return std::max(tensor, l2);
  };
  p.cost = (full * waveCost(perWave) + (rest ? waveCost(rest) : 0.0)) / splits;
  return p;
}

// Whether tiling t can run at all: shared memory within the opt-in limit, N within grid.y.
inline bool mmaTilingFits(MmaTiling t, int N, const GemmDevice& d) {
  return mmaSharedBytes(t) <= (size_t)d.sharedPerBlockOptin && (long)N <= 65535L * tileInfo(t).BN;
}

// The cheapest plan; maxSplits = 1 when there is no workspace for split-K.
inline GemmPlan chooseGemmPlan(int M, int N, int K, const GemmDevice& d, int maxSplits) {
  GemmPlan best;
  bool any = false;
  for (int ti = 0; ti < kMmaTilings; ++ti) {
    const MmaTiling t = (MmaTiling)ti;
    if (!mmaTilingFits(t, N, d)) continue;
    const GemmPlan one = mmaPlanFor(t, 1, M, N, d);
    int most = 1;
    if (one.tiles < d.sms)
      most = (int)std::max(1L, std::min({(long)std::min(maxSplits, kMaxSplits), d.sms / one.tiles, (long)(K / kMinSplitK)}));
    for (int s = 1; s <= most; ++s) {
      const GemmPlan p = s == 1 ? one : mmaPlanFor(t, s, M, N, d);
      if (!any || p.cost < best.cost) best = p;
      any = true;
    }
  }
  return best;
}

// Floats of workspace the split-K plans of an M × N × K GEMM need for every M <= maxRows: the
// most splits · M · N over them (0 when none splits). Splits need tiles < SMs, so only M below
// SMs · 128 rows can split.
inline size_t splitKWorkspaceFloats(int maxRows, int N, int K, const GemmDevice& d) {
  size_t most = 0;
  const int top = std::min(maxRows, d.sms * 128);
  for (int M = 1; M <= top; ++M) {
    const GemmPlan p = chooseGemmPlan(M, N, K, d, kMaxSplits);
    if (p.splits > 1) most = std::max(most, (size_t)p.splits * M * N);
  }
  return most;
}

}  // namespace evit::cuda
