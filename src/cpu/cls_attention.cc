// Multi-head self-attention over qkv with the class token's score row (attend_heads.cc does the
// work): S = q·kᵀ / √d, P = softmax(S) row by row, out = P·v, and the head mean of row 0 of P.
#include <vector>

#include "attention_tiles.h"
#include "ops.h"

namespace evit::cpu {

void clsAttention(float* out, float* clsScores, const float* qkv, int B, int N, int heads, int headDim) {
  const int C = heads * headDim;
  const size_t ld = 3 * (size_t)C;
  // Row 0 of every head's softmax, so the head mean can be taken in a fixed order afterwards.
  std::vector<float> headRows(clsScores ? (size_t)B * heads * N : 0);  // small: B·heads·N
  attendHeads({out, (size_t)C, qkv, qkv + C, qkv + 2 * C, ld, ld, ld, B, N, N, heads, headDim},
              clsScores ? headRows.data() : nullptr);
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
