// Multi-head attention, one (image, head) pair at a time:
//   S = q·kᵀ / √d,  P = softmax(S) row by row,  out = P·v.
// The AVX-512 and AVX2 kernels below never hold more than a few rows of S: for a block of R
// query rows they compute those R rows of S, softmax them, and multiply them by v while they
// are still in L1. k is packed transposed (kt[c][j]) and v contiguous once per task, so both
// inner loops read whole vectors of consecutive floats. Head dims that are not a multiple of
// 16, and CPUs without AVX2 (or EVIT_CPU_ISA=scalar), go through two OpenBLAS GEMMs per head.
#include <algorithm>
#include <cblas.h>
#include <cmath>
#include <cstdint>
#include <memory>
#include <vector>

#include "attention_tiles.h"
#include "ops.h"
#include "thread_pool.h"
#include "vec_math.h"

namespace evit::cpu {

namespace {

// Grow-only scratch owned by the calling thread (a forward pass's worker, or the JS thread for
// the single-op exports), so a pass does not allocate, and fault in, fresh pages per block.
float* callerScratch(size_t floats) {
  thread_local std::unique_ptr<float[]> buf;
  thread_local size_t size = 0;
  if (floats > size) {
    buf.reset();
    buf.reset(new float[floats]);  // uninitialised
    size = floats;
  }
  return buf.get();
}

// ------------------------------------------------------------------------------------------
// Portable path: the full N×N probability matrix per head, two GEMMs.
void blasAttention(const float* qkv, int B, int N, int heads, int headDim, float* out, float* headRows) {
  ThreadPool& tp = pool();
  const int C = heads * headDim;
  const size_t ld = 3 * (size_t)C;
  const float scale = 1.0f / std::sqrt((float)headDim);
  float* probs = callerScratch((size_t)tp.size() * N * N);
  tp.parallelTasks((size_t)B * heads, [&](size_t task, int worker) {
    const int b = (int)(task / heads), h = (int)(task % heads);
    const float* q = qkv + (size_t)b * N * ld + (size_t)h * headDim;
    const float* k = q + C;
    const float* v = q + 2 * C;
    float* p = probs + (size_t)worker * N * N;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, N, headDim, scale, q, ld, k, ld, 0.0f, p, N);
    for (int i = 0; i < N; ++i) softmaxRow(p + (size_t)i * N, N);
    if (headRows) std::copy(p, p + N, headRows + ((size_t)b * heads + h) * N);
    float* o = out + (size_t)b * N * C + (size_t)h * headDim;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, headDim, N, 1.0f, p, N, v, ld, 0.0f, o, C);
  });
}

}  // namespace

void clsAttention(float* out, float* clsScores, const float* qkv, int B, int N, int heads, int headDim) {
  // Row 0 of every head's softmax, so the head mean can be taken in a fixed order afterwards.
  std::vector<float> headRows(clsScores ? (size_t)B * heads * N : 0);  // small: B·heads·N
  float* rows = clsScores ? headRows.data() : nullptr;

  const bool use512 = headDim % 16 == 0 && hasAvx512();
  const bool useAvx2 = headDim % 16 == 0 && !use512 && hasAvx2Fma();
  if (!use512 && !useAvx2) {
    blasAttention(qkv, B, N, heads, headDim, out, rows);
  } else {
    ThreadPool& tp = pool();
    const int C = heads * headDim;
    const size_t ld = 3 * (size_t)C;
    const int d = headDim;
    const int npad = (N + 15) / 16 * 16;
    const int R = use512 ? kRows512 : kRowsAvx2;
    // Few (image, head) pairs for the workers (one image of DeiT-T: 3 heads on 2 threads) leave
    // some idle, so each pair's rows are then split into chunks of whole row blocks; every
    // chunk packs k and v again, which costs little next to its 4·rows·N·d flops.
    const size_t pairs = (size_t)B * heads;
    const int blocks = (N + R - 1) / R;
    int chunks = 1;
    if (pairs < 2 * (size_t)tp.size()) chunks = std::min(blocks, (int)((2 * tp.size() + pairs - 1) / pairs));
    const int blocksPerChunk = (blocks + chunks - 1) / chunks;
    chunks = (blocks + blocksPerChunk - 1) / blocksPerChunk;

    // One scratch block per worker, 64-byte aligned: kt, then vp, then s.
    const size_t ktSize = (size_t)d * npad, vpSize = ((size_t)N * d + 15) / 16 * 16, sSize = (size_t)R * npad;
    const size_t perWorker = ktSize + vpSize + sSize;
    float* scratch = callerScratch((size_t)tp.size() * perWorker + 16);
    float* base = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(scratch) + 63) & ~(uintptr_t)63);

    tp.parallelTasks(pairs * chunks, [&](size_t task, int worker) {
      const size_t pair = task / chunks;
      const int chunk = (int)(task % chunks);
      const int b = (int)(pair / heads), h = (int)(pair % heads);
      HeadSlice hs;
      hs.q = qkv + (size_t)b * N * ld + (size_t)h * d;
      hs.k = hs.q + C;
      hs.v = hs.q + 2 * C;
      hs.ldq = hs.ldk = hs.ldv = ld;
      hs.o = out + (size_t)b * N * C + (size_t)h * d;
      hs.ldo = C;
      hs.clsRow = rows ? rows + pair * N : nullptr;
      hs.N = hs.M = N;
      hs.d = d;
      hs.i0 = chunk * blocksPerChunk * R;
      hs.i1 = std::min(N, (chunk + 1) * blocksPerChunk * R);
      hs.scale = 1.0f / std::sqrt((float)d);
      Scratch sc;
      sc.kt = base + (size_t)worker * perWorker;
      sc.vp = sc.kt + ktSize;
      sc.s = sc.vp + vpSize;
      sc.npad = npad;
      packKv(hs, sc);
      if (use512) {
        attendSlice512(hs, sc);
      } else {
        attendSliceAvx2(hs, sc);
      }
    });
  }

  if (!clsScores) return;
  for (int b = 0; b < B; ++b) {
    float* s = clsScores + (size_t)b * (N - 1);
    for (int j = 1; j < N; ++j) {
      float acc = 0;
      for (int h = 0; h < heads; ++h) acc += headRows[((size_t)b * heads + h) * N + j];
      s[j - 1] = acc / heads;
    }
  }
}

}  // namespace evit::cpu
