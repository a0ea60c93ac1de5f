// The driver behind both attention ops: (image, head) pairs, and when there are too few of them
// for the workers, chunks of their query rows, spread over the pool. The SIMD tiles never hold
// more than a few rows of S = q·kᵀ/√d: for a block of R query rows they compute those rows,
// softmax them and multiply by v while they are in L1; k is packed transposed and v contiguous once
// per task, so both inner loops read whole vectors of consecutive floats.
#include <algorithm>
#include <cblas.h>
#include <cmath>
#include <cstdint>
#include <memory>

#include "attention_tiles.h"
#include "thread_pool.h"
#include "vec_math.h"

namespace evit::cpu {

namespace {

// Grow-only scratch owned by the calling thread (a forward pass's worker, or the JS thread for
// the single-op exports), 64-byte aligned, so a pass does not allocate, and fault in, fresh
// pages per block.
float* callerScratch(size_t floats) {
  thread_local std::unique_ptr<float[]> buf;
  thread_local size_t size = 0;
  if (floats + 16 > size) {
    buf.reset();
    buf.reset(new float[floats + 16]);  // uninitialised
    size = floats + 16;
  }
  return reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(buf.get()) + 63) & ~(uintptr_t)63);
}

// Query rows per task of the BLAS path: bounds its probability block to kBlasRows × M floats.
constexpr int kBlasRows = 256;

void attendBlas(const HeadsView& a, float* clsRows) {
  ThreadPool& tp = pool();
  const float scale = 1.0f / std::sqrt((float)a.d);
  const int chunkRows = std::min(a.N, kBlasRows);
  const int chunks = (a.N + chunkRows - 1) / chunkRows;
  float* probs = callerScratch((size_t)tp.size() * chunkRows * a.M);
  tp.parallelTasks((size_t)a.B * a.heads * chunks, [&](size_t task, int worker) {
    const size_t pair = task / chunks;
    const int b = (int)(pair / a.heads), h = (int)(pair % a.heads);
    const int i0 = (int)(task % chunks) * chunkRows, rows = std::min(chunkRows, a.N - i0);
    const float* q = a.q + ((size_t)b * a.N + i0) * a.ldq + (size_t)h * a.d;
    const float* k = a.k + (size_t)b * a.M * a.ldk + (size_t)h * a.d;
    const float* v = a.v + (size_t)b * a.M * a.ldv + (size_t)h * a.d;
    float* o = a.out + ((size_t)b * a.N + i0) * a.ldo + (size_t)h * a.d;
    float* p = probs + (size_t)worker * chunkRows * a.M;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, a.M, a.d, scale, q, a.ldq, k, a.ldk, 0.0f, p, a.M);
    for (int i = 0; i < rows; ++i) softmaxRow(p + (size_t)i * a.M, a.M);
    if (clsRows && i0 == 0) std::copy(p, p + a.M, clsRows + pair * a.M);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, a.d, a.M, 1.0f, p, a.M, v, a.ldv, 0.0f, o, a.ldo);
  });
}

void attendTiles(const HeadsView& a, float* clsRows, bool use512) {
  ThreadPool& tp = pool();
  const int d = a.d;
  const int npad = (a.M + 15) / 16 * 16;
  const int R = use512 ? kRows512 : kRowsAvx2;
  // Few (image, head) pairs for the workers (one image of DeiT-T: 3 heads on 2 threads) leave
  // some idle, so each pair's rows are then split into chunks of whole row blocks; every chunk
  // packs k and v again, which costs little next to its 4·rows·M·d flops.
  const size_t pairs = (size_t)a.B * a.heads;
  const int blocks = (a.N + R - 1) / R;
  int chunks = 1;
  if (pairs < 2 * (size_t)tp.size()) chunks = std::min(blocks, (int)((2 * tp.size() + pairs - 1) / pairs));
  const int blocksPerChunk = (blocks + chunks - 1) / chunks;
  chunks = (blocks + blocksPerChunk - 1) / blocksPerChunk;

  // One scratch block per worker: kt, then vp, then s.
  const size_t ktSize = (size_t)d * npad, vpSize = ((size_t)a.M * d + 15) / 16 * 16, sSize = (size_t)R * npad;
  const size_t perWorker = ktSize + vpSize + sSize;
  float* base = callerScratch((size_t)tp.size() * perWorker);

  tp.parallelTasks(pairs * chunks, [&](size_t task, int worker) {
    const size_t pair = task / chunks;
    const int chunk = (int)(task % chunks);
    const int b = (int)(pair / a.heads), h = (int)(pair % a.heads);
    HeadSlice hs;
    hs.q = a.q + (size_t)b * a.N * a.ldq + (size_t)h * d;
    hs.k = a.k + (size_t)b * a.M * a.ldk + (size_t)h * d;
    hs.v = a.v + (size_t)b * a.M * a.ldv + (size_t)h * d;
    hs.ldq = a.ldq;
    hs.ldk = a.ldk;
    hs.ldv = a.ldv;
    hs.o = a.out + (size_t)b * a.N * a.ldo + (size_t)h * d;
    hs.ldo = a.ldo;
    hs.clsRow = clsRows ? clsRows + pair * a.M : nullptr;
    hs.N = a.N;
    hs.M = a.M;
    hs.d = d;
    hs.i0 = chunk * blocksPerChunk * R;
    hs.i1 = std::min(a.N, (chunk + 1) * blocksPerChunk * R);
    hs.scale = 1.0f / std::sqrt((float)d);
    Scratch sc;
    sc.kt = base + (size_t)worker * perWorker;
    sc.vp = sc.kt + ktSize;
    sc.s = sc.vp + vpSize;
    sc.npad = npad;
    packKv(hs, sc);
    if (use512)
      attendSlice512(hs, sc);
    else
      attendSliceAvx2(hs, sc);
  });
}

}  // namespace

void attendHeads(const HeadsView& a, float* clsRows) {
  const bool use512 = a.d % 16 == 0 && hasAvx512();
  const bool useAvx2 = a.d % 16 == 0 && !use512 && hasAvx2Fma();
  if (use512 || useAvx2)
    attendTiles(a, clsRows, use512);
  else
    attendBlas(a, clsRows);
}

}  // namespace evit::cpu
