// binding.testing.cudaHost: the host-side halves of the CUDA kernels, run on the CPU so that a
// machine without a GPU still tests them. The kernels and these functions call the same
// __host__ __device__ helpers (cuda/*.h): the ranking keys and the sorting network of
// topkGatherFuse, the fixed-order head mean, GELU, and every tiling's index arithmetic,
// which is enumerated here block by block, warp by warp and lane by lane.
#include <cstdint>
#include <string>
#include <vector>

#include "../../src/binding/napi_args.h"
#include "../../src/testing/testing_exports.h"
#include "../device_math.h"
#include "../tile_index.h"
#include "../topk_order.h"

namespace evit {

namespace {

using namespace evit::cuda;

constexpr int kMaxDim = 1 << 16;

// topk(scores, B, M, k) -> Int32Array [B, k]: the kernel's ranking, the network run serially.
Napi::Value TopK(const Napi::CallbackInfo& info) {
  const int B = intArg(info[1], "B", 1, kMaxDim), M = intArg(info[2], "M", 1, 1 << 20);
  const int k = intArg(info[3], "k", 1, M);
  auto s = typedArrayArg<float>(info[0], "scores", (int64_t)B * M);
  auto idx = Napi::Int32Array::New(info.Env(), (size_t)B * k);
  const int n = bitonicSize(M);
  std::vector<uint64_t> keys(n);
  for (int b = 0; b < B; ++b) {
    for (int j = 0; j < n; ++j) keys[j] = j < M ? rankKey(s[(size_t)b * M + j], j) : kPadKey;
    bitonicSortSerial(keys.data(), n);
    for (int i = 0; i < k; ++i) idx[(size_t)b * k + i] = keyIndex(keys[i]);
  }
  return idx;
}

// headMean(probs [B, heads, N], B, heads, N) -> Float32Array [B, N-1], class column dropped.
Napi::Value HeadMean(const Napi::CallbackInfo& info) {
  const int B = intArg(info[1], "B", 1, kMaxDim), H = intArg(info[2], "heads", 1, 4096),
            N = intArg(info[3], "N", 2, 1 << 20);
  auto p = typedArrayArg<float>(info[0], "probs", (int64_t)B * H * N);
  auto out = Napi::Float32Array::New(info.Env(), (size_t)B * (N - 1));
  for (int b = 0; b < B; ++b)
    for (int j = 0; j < N - 1; ++j) out[(size_t)b * (N - 1) + j] = headMean(p.Data() + (size_t)b * H * N + 1 + j, N, H);
  return out;
}

Napi::Value Gelu(const Napi::CallbackInfo& info) {
  auto x = typedArrayArg<float>(info[0], "x");
  auto out = Napi::Float32Array::New(info.Env(), x.ElementLength());
  for (size_t i = 0; i < x.ElementLength(); ++i) out[i] = geluErf(x[i]);
  return out;
}

// Coverage counts of an M × N (or rows × cols) output: how many elements were written
// never, more than once, and how many writes fell outside (those the kernels must guard).
struct Coverage {
  std::vector<uint8_t> hits;
  long outside = 0;
  Coverage(long n) : hits(n, 0) {}
  void hit(bool inside, long i) {
    if (!inside || i < 0 || i >= (long)hits.size()) {
      ++outside;
    } else if (hits[i] < 255) {
      ++hits[i];
    }
  }
  void report(Napi::Object& o, const char* prefix) const {
    long missed = 0, repeated = 0;
    for (uint8_t h : hits) {
      missed += h == 0;
      repeated += h > 1;
    }
    o.Set(std::string(prefix) + "Elements", (double)hits.size());
    o.Set(std::string(prefix) + "Missed", (double)missed);
    o.Set(std::string(prefix) + "Repeated", (double)repeated);
    o.Set(std::string(prefix) + "Outside", (double)outside);
  }
};

// Loads a BM- or BN-row tile as the cp.async loop does, then replays every ldmatrix.x4 of
// every warp and compares what each lane receives with the mma.m16n8k16 fragment layout
// of the PTX ISA. Returns the number of wrong elements; counts bank conflicts and tiling gaps.
struct TileReplay {
  long wrong = 0, conflicts = 0, loadMissed = 0, loadRepeated = 0;
};

TileReplay replayTile(const MmaShape& s, bool isA) {
  TileReplay out;
  const int rows = isA ? s.BM : s.BN;
  // Each shared element records the (row, k) it holds, as row * kMmaBK + k; -1 = never written.
  std::vector<int> tag(rows * kMmaBK, -1), hits(rows * kMmaChunks, 0);
  for (int tid = 0; tid < s.threads(); ++tid)
    for (int i = 0; i < rows * kMmaChunks / s.threads(); ++i) {
      int row, chunk;
      mmaLoadCoord(tid, i, s.threads(), row, chunk);
      if (row >= rows) continue;
      ++hits[row * kMmaChunks + chunk];
      for (int e = 0; e < 8; ++e) tag[mmaSmemOffset(row, chunk) + e] = row * kMmaBK + chunk * 8 + e;
    }
  for (int h : hits) {
    out.loadMissed += h == 0;
    out.loadRepeated += h > 1;
  }
  const int warps = s.WM * s.WN;
  for (int warp = 0; warp < warps; ++warp)
    for (int kk = 0; kk < kMmaBK / 16; ++kk)
      for (int f = 0; f < (isA ? s.mi() : s.ni() / 2); ++f) {
        int offs[32];
        for (int lane = 0; lane < 32; ++lane) {
          int row, chunk;
          if (isA)
            mmaLdmatrixA(s, warp, f, kk, lane, row, chunk);
          else
            mmaLdmatrixB(s, warp, f, kk, lane, row, chunk);
          offs[lane] = mmaSmemOffset(row, chunk);
        }
        for (int q = 0; q < 4; ++q) {
          // One ldmatrix phase: the 8 row addresses of matrix q must use 8 distinct 16-byte bank groups.
          unsigned groups = 0;
          for (int l = 0; l < 8; ++l) groups |= 1u << ((offs[8 * q + l] * 2 / 16) % 8);
          if (groups != 0xFFu) ++out.conflicts;
          for (int lane = 0; lane < 32; ++lane)
            for (int e = 0; e < 2; ++e) {
              // ldmatrix: lane gets row lane/4, columns 2·(lane%4) + e of matrix q.
              const int got = tag[offs[8 * q + lane / 4] + 2 * (lane % 4) + e];
              const int g = lane / 4, t2 = 2 * (lane % 4) + e;
              int wantRow, wantK;
              if (isA) {  // a_q: row g + 8·(q & 1), k 2t + 8·(q >> 1)
                wantRow = (warp / s.WN) * s.warpM() + f * 16 + g + 8 * (q & 1);
                wantK = kk * 16 + t2 + 8 * (q >> 1);
              } else {  // fragment 2f + q/2, b_{q%2}: column n = g, k 2t + 8·(q % 2)
                wantRow = (warp % s.WN) * s.warpN() + (2 * f + q / 2) * 8 + g;
                wantK = kk * 16 + t2 + 8 * (q % 2);
              }
              if (got != wantRow * kMmaBK + wantK) ++out.wrong;
            }
        }
      }
  return out;
}

// mmaTiling(M, N, K, shape: '128x128' | '128x64' | '64x64', splits = 1) -> coverage and fragment checks;
// k coverage over the splits' k-slice ranges.
Napi::Value MmaTiling(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int M = intArg(info[0], "M", 1, 4096), N = intArg(info[1], "N", 1, 4096), K = intArg(info[2], "K", 8, 1 << 16);
  if (K % 8) throw rangeError(env, "K must be a multiple of 8 (whole 16-byte chunks), got " + std::to_string(K));
  const std::string name = info[3].ToString().Utf8Value();
  MmaShape s;
  if (name == "128x128") s = {128, 128, 2, 4};
  else if (name == "128x64") s = {128, 64, 2, 2};
  else if (name == "64x64") s = {64, 64, 2, 2};
  else throw rangeError(env, "shape must be '128x128', '128x64' or '64x64'");
  const int splits = info.Length() > 4 && !info[4].IsUndefined() ? intArg(info[4], "splits", 1, 64) : 1;
  Coverage cov((long)M * N);
  long pairErrors = 0;
  for (int bm = 0; bm < (M + s.BM - 1) / s.BM; ++bm)
    for (int bn = 0; bn < (N + s.BN - 1) / s.BN; ++bn)
      for (int warp = 0; warp < s.WM * s.WN; ++warp)
        for (int mi = 0; mi < s.mi(); ++mi)
          for (int ni = 0; ni < s.ni(); ++ni)
            for (int lane = 0; lane < 32; ++lane)
              for (int r = 0; r < 4; ++r) {
                int row, col;
                mmaOutCoord(s, bm, bn, warp, mi, ni, lane, r, row, col);
                cov.hit(row < M && col < N, (long)row * N + col);
                // The epilogue stores registers (r, r + 1) as one pair: same row, columns col (even) and col + 1.
                if (r % 2 == 0) {
                  int row1, col1;
                  mmaOutCoord(s, bm, bn, warp, mi, ni, lane, r + 1, row1, col1);
                  pairErrors += row1 != row || col1 != col + 1 || col % 2 != 0;
                }
              }
  // Each k < K is loaded by exactly one (split, slice, chunk) whose predicate lets it through.
  Coverage kcov(K);
  const int splitTiles = mmaSplitTiles(K, splits), used = mmaSplitCount(K, splitTiles);
  long emptySplits = 0;
  for (int z = 0; z < used; ++z) {
    int kt0, count;
    mmaSplitRange(K, splitTiles, z, kt0, count);
    emptySplits += count < 1;
    for (int kt = kt0; kt < kt0 + count; ++kt)
      for (int chunk = 0; chunk < kMmaChunks; ++chunk)
        for (int e = 0; e < 8; ++e) {
          const int k = kt * kMmaBK + chunk * 8 + e;
          kcov.hit(kt * kMmaBK + chunk * 8 < K, k);
        }
  }
  Napi::Object o = Napi::Object::New(env);
  cov.report(o, "out");
  kcov.report(o, "k");
  const TileReplay a = replayTile(s, true), b = replayTile(s, false);
  o.Set("fragmentErrors", (double)(a.wrong + b.wrong));
  o.Set("pairErrors", (double)pairErrors);
  o.Set("splits", (double)used);
  o.Set("emptySplits", (double)emptySplits);
  o.Set("bankConflicts", (double)(a.conflicts + b.conflicts));
  o.Set("loadMissed", (double)(a.loadMissed + b.loadMissed));
  o.Set("loadRepeated", (double)(a.loadRepeated + b.loadRepeated));
  return o;
}

// simtTiling(M, N) -> coverage of the fp32 GEMM's outputs and of its 64 × 16 slice loads.
Napi::Value SimtTiling(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int M = intArg(info[0], "M", 1, 4096), N = intArg(info[1], "N", 1, 4096);
  Coverage cov((long)M * N), load((long)kSimtBM * kSimtBK);
  for (int bm = 0; bm < (M + kSimtBM - 1) / kSimtBM; ++bm)
    for (int bn = 0; bn < (N + kSimtBN - 1) / kSimtBN; ++bn)
      for (int tid = 0; tid < kSimtThreads; ++tid)
        for (int i = 0; i < 4; ++i)
          for (int j = 0; j < 4; ++j) {
            int row, col;
            simtOutCoord(bm, bn, tid, i, j, row, col);
            cov.hit(row < M && col < N, (long)row * N + col);
          }
  for (int tid = 0; tid < kSimtThreads; ++tid)
    for (int e = 0; e < kSimtBM * kSimtBK / kSimtThreads; ++e) {
      int row, k;
      simtLoadCoord(tid, e, row, k);
      load.hit(row < kSimtBM && k < kSimtBK, (long)row * kSimtBK + k);
    }
  Napi::Object o = Napi::Object::New(env);
  cov.report(o, "out");
  load.report(o, "load");
  return o;
}

// attentionTiling(N, headDim) -> coverage of one head's outputs [N, d] and of the scores
// [N, N] over every block and key chunk.
Napi::Value AttentionTiling(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int N = intArg(info[0], "N", 2, 4096), d = intArg(info[1], "headDim", 1, 128);
  Coverage out((long)N * d), scores((long)N * N);
  for (int q0 = 0; q0 < N; q0 += kAttnRows)
    for (int tid = 0; tid < kAttnThreads; ++tid) {
      for (int e = 0; e < attnOutPerThread(d); ++e) {
        int r, c;
        attnOutCoord(tid, e, d, r, c);
        if (r < kAttnRows && q0 + r < N) out.hit(true, (long)(q0 + r) * d + c);  // the kernel's own guard
      }
      for (int j0 = 0; j0 < N; j0 += kAttnKeys)
        for (int i = 0; i < kAttnRowsPerThread; ++i) {
          int r, j;
          attnScoreCoord(tid, i, r, j);
          if (q0 + r < N) scores.hit(j0 + j < N, (long)(q0 + r) * N + j0 + j);
        }
    }
  Napi::Object o = Napi::Object::New(env);
  out.report(o, "out");
  scores.report(o, "score");
  return o;
}

// Bank groups of 8-byte accesses by a half-warp: 16 addresses (in floats) must cover 32 distinct banks.
bool float2ConflictFree(const int* floatOffsets16) {
  uint64_t banks = 0;
  for (int l = 0; l < 16; ++l) banks |= 3ull << (floatOffsets16[l] % 32);
  return (banks & 0xFFFFFFFFull) == 0xFFFFFFFFull;
}

// attentionMmaTiling(N, headDim) -> checks of the tensor-core attention's index math: the K/V
// chunk staging, the ldmatrix (K) and ldmatrix.trans (V) fragments against the mma layout,
// bank conflicts of those and of the fp32 score rows, and coverage of scores, P and outputs.
Napi::Value AttentionMmaTiling(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int N = intArg(info[0], "N", 2, 4096), d = intArg(info[1], "headDim", 16, 128);
  if (d % 16) throw rangeError(env, "headDim must be a multiple of 16");
  const int kvStride = attnKvStride(d), sStride = attnScoreStride(N), keys = kAttnMmaKeys;
  long wrong = 0, conflicts = 0, stagingErrors = 0;

  // Staging: every (key, 8-channel chunk) once, inside its row, tagged key·256 + channel.
  std::vector<int> tag(keys * kvStride, -1);
  for (int e = 0; e < keys * (d / 8); ++e) {
    const int key = e / (d / 8), ch = e % (d / 8);
    for (int i = 0; i < 8; ++i) {
      int& slot = tag[key * kvStride + ch * 8 + i];
      if (slot != -1) ++stagingErrors;
      slot = key * 256 + ch * 8 + i;
    }
  }
  for (int kk = 0; kk < d / 16; ++kk)
    for (int np = 0; np < keys / 16; ++np) {
      int offK[32], offV[32];
      for (int lane = 0; lane < 32; ++lane) {
        int key, chunk;
        attnLdmatrixK(np, kk, lane, key, chunk);
        offK[lane] = key * kvStride + chunk * 8;
      }
      // For V the roles swap: kk indexes channel pairs of fragments, np the 16-key step.
      for (int lane = 0; lane < 32; ++lane) {
        int key, chunk;
        attnLdmatrixV(kk, np, lane, key, chunk);
        offV[lane] = key * kvStride + chunk * 8;
      }
      for (int q = 0; q < 4; ++q) {
        unsigned gk = 0, gv = 0;
        for (int l = 0; l < 8; ++l) {
          gk |= 1u << ((offK[8 * q + l] * 2 / 16) % 8);
          gv |= 1u << ((offV[8 * q + l] * 2 / 16) % 8);
        }
        conflicts += (gk != 0xFFu) + (gv != 0xFFu);
        for (int lane = 0; lane < 32; ++lane)
          for (int e = 0; e < 2; ++e) {
            const int g = lane / 4, t2 = 2 * (lane % 4) + e;
            // K, no transpose: fragment 2np + q/2, b_{q%2}: key n = g, channel k = 2t + 8·(q%2).
            const int gotK = tag[offK[8 * q + lane / 4] + 2 * (lane % 4) + e];
            const int wantK = (np * 16 + (q / 2) * 8 + g) * 256 + kk * 16 + 8 * (q % 2) + t2;
            // V, transposed: lane gets row 2t + e, column g of matrix q; fragment 2kk + q/2, b_{q%2}:
            // key k = 2t + e + 8·(q%2) of the step, channel n = g.
            const int gotV = tag[offV[8 * q + t2] + g];
            const int wantV = (np * 16 + 8 * (q % 2) + t2) * 256 + kk * 16 + (q / 2) * 8 + g;
            wrong += (gotK != wantK) + (gotV != wantV);
          }
      }
    }

  // Scores: a warp's 16 rows × each chunk's keys written once (pairs of columns), P read once.
  Coverage sCov(16L * sStride), pCov(16L * sStride), out((long)N * d);
  const int chunks = (N + keys - 1) / keys;
  for (int t = 0; t < chunks; ++t)
    for (int ni = 0; ni < keys / 8; ++ni)
      for (int hh = 0; hh < 2; ++hh) {
        int offs[32];
        for (int lane = 0; lane < 32; ++lane) {
          const int row = mmaAccRow(lane, 2 * hh), col = t * keys + ni * 8 + mmaAccCol(lane, 0);
          offs[lane] = row * sStride + col;
          for (int e = 0; e < 2; ++e) sCov.hit(col + e < sStride - 8, (long)row * sStride + col + e);
        }
        conflicts += !float2ConflictFree(offs) + !float2ConflictFree(offs + 16);
      }
  for (int t = 0; t < chunks; ++t)
    for (int ks = 0; ks < keys / 16; ++ks)
      for (int q = 0; q < 4; ++q) {
        int offs[32];
        for (int lane = 0; lane < 32; ++lane) {
          const int row = mmaFragARow(lane, q), col = t * keys + ks * 16 + mmaFragACol(lane, q, 0);
          offs[lane] = row * sStride + col;
          for (int e = 0; e < 2; ++e) pCov.hit(true, (long)row * sStride + col + e);
        }
        conflicts += !float2ConflictFree(offs) + !float2ConflictFree(offs + 16);
      }
  // Pad columns (sStride - 8 .. sStride) are never touched: count them out of both coverages.
  long scoreGaps = 0, probGaps = 0;
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < sStride; ++c) {
      const bool live = c < chunks * keys;
      scoreGaps += live != (sCov.hits[r * sStride + c] == 1);
      probGaps += live != (pCov.hits[r * sStride + c] == 1);
    }
  // Outputs: warp w of the grid owns rows 16w.., each lane pairs of channels.
  for (int w = 0; w < (N + 15) / 16; ++w)
    for (int ni = 0; ni < d / 8; ++ni)
      for (int hh = 0; hh < 2; ++hh)
        for (int lane = 0; lane < 32; ++lane) {
          const int row = w * 16 + mmaAccRow(lane, 2 * hh), col = ni * 8 + mmaAccCol(lane, 0);
          if (row < N)
            for (int e = 0; e < 2; ++e) out.hit(true, (long)row * d + col + e);
        }
  Napi::Object o = Napi::Object::New(env);
  out.report(o, "out");
  o.Set("fragmentErrors", (double)wrong);
  o.Set("bankConflicts", (double)conflicts);
  o.Set("stagingErrors", (double)stagingErrors);
  o.Set("scoreGaps", (double)scoreGaps);
  o.Set("probGaps", (double)probGaps);
  return o;
}

}  // namespace

Napi::Object DefineCudaHostChecks(Napi::Env env) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("topk", Napi::Function::New<TopK>(env, "topk"));
  o.Set("headMean", Napi::Function::New<HeadMean>(env, "headMean"));
  o.Set("gelu", Napi::Function::New<Gelu>(env, "gelu"));
  o.Set("mmaTiling", Napi::Function::New<MmaTiling>(env, "mmaTiling"));
  o.Set("simtTiling", Napi::Function::New<SimtTiling>(env, "simtTiling"));
  o.Set("attentionTiling", Napi::Function::New<AttentionTiling>(env, "attentionTiling"));
  o.Set("attentionMmaTiling", Napi::Function::New<AttentionMmaTiling>(env, "attentionMmaTiling"));
  return o;
}

}  // namespace evit
