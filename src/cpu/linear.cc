#include <algorithm>
#include <cblas.h>
#include <cmath>

#include "ops.h"
#include "thread_pool.h"
#include "vec_math.h"

namespace evit::cpu {

namespace {

// One tile of the output: rows [m0, m1) and columns [n0, n1), GEMM then epilogue while hot.
void linearTile(const float* x, int K, const float* W, const float* b, int N, float* out, Epilogue ep, int m0, int m1,
                int n0, int n1) {
  const int m = m1 - m0, n = n1 - n0;
  if (m <= 0 || n <= 0) return;
  float* c = out + (size_t)m0 * N + n0;
  const float beta = ep == Epilogue::BiasResidual ? 1.0f : 0.0f;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, K, 1.0f, x + (size_t)m0 * K, K, W + (size_t)n0 * K, K,
              beta, c, N);
  for (int i = 0; i < m; ++i) {
    float* row = c + (size_t)i * N;
    const float* bias = b + n0;
    if (ep == Epilogue::BiasGelu) {
      biasGeluRow(row, bias, row, n);
    } else if (ep == Epilogue::BiasRelu) {
      for (int j = 0; j < n; ++j) row[j] = std::max(row[j] + bias[j], 0.0f);
    } else {
      for (int j = 0; j < n; ++j) row[j] += bias[j];
    }
  }
}

}  // namespace

void linearTile(float* out, const float* x, const float* W, const float* b, int M, int N, int K, Epilogue ep, int n0,
                int n1) {
  linearTile(x, K, W, b, N, out, ep, 0, M, n0, n1);
}

void linear(float* out, const float* x, const float* W, const float* b, int M, int N, int K, Epilogue ep) {
  ThreadPool& tp = pool();
  const int t = tp.size();
  // Split rows when there are enough for every thread to run a full GEMM panel; else split columns.
  if (M >= 128 * t || N < 16 * t) {
    tp.parallelFor(M, [&](size_t m0, size_t m1, int) { linearTile(x, K, W, b, N, out, ep, (int)m0, (int)m1, 0, N); });
  } else {
    // Column chunks are multiples of 16 so each starts on a cache line of W's rows.
    const int blocks = (N + 15) / 16;
    tp.parallelFor(blocks, [&](size_t c0, size_t c1, int) {
      linearTile(x, K, W, b, N, out, ep, 0, M, (int)c0 * 16, std::min(N, (int)c1 * 16));
    });
  }
}

}  // namespace evit::cpu
