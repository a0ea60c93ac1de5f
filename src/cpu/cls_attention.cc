#include <algorithm>
#include <cblas.h>
#include <cmath>
#include <vector>

#include "ops.h"
#include "thread_pool.h"
#include "vec_math.h"

namespace evit::cpu {

void clsAttention(const float* qkv, int B, int N, int heads, int headDim, float* out, float* clsScores) {
  ThreadPool& tp = pool();
  const int C = heads * headDim;
  const size_t ld = 3 * (size_t)C;
  const float scale = 1.0f / std::sqrt((float)headDim);
  std::vector<float> probs((size_t)tp.size() * N * N);
  // Row 0 of every head's softmax, so the head mean can be taken in a fixed order afterwards.
  std::vector<float> headRows(clsScores ? (size_t)B * heads * N : 0);

  tp.parallelTasks((size_t)B * heads, [&](size_t task, int worker) {
    const int b = (int)(task / heads), h = (int)(task % heads);
    const float* q = qkv + (size_t)b * N * ld + (size_t)h * headDim;
    const float* k = q + C;
    const float* v = q + 2 * C;
    float* p = probs.data() + (size_t)worker * N * N;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, N, headDim, scale, q, ld, k, ld, 0.0f, p, N);
    for (int i = 0; i < N; ++i) softmaxRow(p + (size_t)i * N, N);
    if (clsScores) std::copy(p, p + N, headRows.data() + ((size_t)b * heads + h) * N);
    float* o = out + (size_t)b * N * C + (size_t)h * headDim;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, headDim, N, 1.0f, p, N, v, ld, 0.0f, o, C);
  });

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
