// Attention of N queries against M keys (M < N where keys are aggregated, as in shunted
// self-attention), q, k, v and out each read at their own row stride so a head group works on
// channel slices of wider tensors in place. Head dims that are a multiple of 16 run on the SIMD
// tiles of cls_attention.cc (scores, softmax and P·v of a few query rows at a time, in L1);
// other head dims, and CPUs without AVX2, go through two OpenBLAS GEMMs per block of queries.
#include <algorithm>
#include <cblas.h>
#include <cmath>
#include <cstdint>
#include <memory>

#include "attention_tiles.h"
#include "ops.h"
#include "thread_pool.h"
#include "vec_math.h"

namespace evit::cpu {

namespace {

// Grow-only scratch owned by the calling thread (a forward pass's worker, or the JS thread for
// the single-op exports), 64-byte aligned.
float* groupScratch(size_t floats) {
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

}  // namespace

void groupAttention(float* out, long ldo, const float* q, long ldq, const float* k, long ldk, const float* v, long ldv,
                    int B, int N, int M, int heads, int headDim) {
  ThreadPool& tp = pool();
  const int d = headDim;
  const float scale = 1.0f / std::sqrt((float)d);
  const bool use512 = d % 16 == 0 && hasAvx512();
  const bool useAvx2 = d % 16 == 0 && !use512 && hasAvx2Fma();
  const size_t pairs = (size_t)B * heads;

  if (!use512 && !useAvx2) {
    const int chunkRows = std::min(N, kBlasRows);
    const int chunks = (N + chunkRows - 1) / chunkRows;
    float* probs = groupScratch((size_t)tp.size() * chunkRows * M);
    tp.parallelTasks(pairs * chunks, [&](size_t task, int worker) {
      const size_t pair = task / chunks;
      const int b = (int)(pair / heads), h = (int)(pair % heads);
      const int i0 = (int)(task % chunks) * chunkRows, rows = std::min(chunkRows, N - i0);
      const float* qh = q + ((size_t)b * N + i0) * ldq + (size_t)h * d;
      const float* kh = k + (size_t)b * M * ldk + (size_t)h * d;
      const float* vh = v + (size_t)b * M * ldv + (size_t)h * d;
      float* oh = out + ((size_t)b * N + i0) * ldo + (size_t)h * d;
      float* p = probs + (size_t)worker * chunkRows * M;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, M, d, scale, qh, ldq, kh, ldk, 0.0f, p, M);
      for (int i = 0; i < rows; ++i) softmaxRow(p + (size_t)i * M, M);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, d, M, 1.0f, p, M, vh, ldv, 0.0f, oh, ldo);
    });
    return;
  }

  const int npad = (M + 15) / 16 * 16;
  const int R = use512 ? kRows512 : kRowsAvx2;
  // As in clsAttention: too few (image, head) pairs for the workers (one image of a stage with
  // one head per group) and each pair's query rows are split into chunks of whole row blocks,
  // each of which packs k and v again (M·d floats, little next to its 4·rows·M·d flops).
  const int blocks = (N + R - 1) / R;
  int chunks = 1;
  if (pairs < 2 * (size_t)tp.size()) chunks = std::min(blocks, (int)((2 * tp.size() + pairs - 1) / pairs));
  const int blocksPerChunk = (blocks + chunks - 1) / chunks;
  chunks = (blocks + blocksPerChunk - 1) / blocksPerChunk;

  const size_t ktSize = (size_t)d * npad, vpSize = ((size_t)M * d + 15) / 16 * 16, sSize = (size_t)R * npad;
  const size_t perWorker = ktSize + vpSize + sSize;
  float* base = groupScratch((size_t)tp.size() * perWorker);

  tp.parallelTasks(pairs * chunks, [&](size_t task, int worker) {
    const size_t pair = task / chunks;
    const int chunk = (int)(task % chunks);
    const int b = (int)(pair / heads), h = (int)(pair % heads);
    HeadSlice hs;
    hs.q = q + (size_t)b * N * ldq + (size_t)h * d;
    hs.k = k + (size_t)b * M * ldk + (size_t)h * d;
    hs.v = v + (size_t)b * M * ldv + (size_t)h * d;
    hs.ldq = ldq;
    hs.ldk = ldk;
    hs.ldv = ldv;
    hs.o = out + (size_t)b * N * ldo + (size_t)h * d;
    hs.ldo = ldo;
    hs.clsRow = nullptr;
    hs.N = N;
    hs.M = M;
    hs.d = d;
    hs.i0 = chunk * blocksPerChunk * R;
    hs.i1 = std::min(N, (chunk + 1) * blocksPerChunk * R);
    hs.scale = scale;
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

}  // namespace evit::cpu
