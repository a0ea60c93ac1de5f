// Attention of N queries against M keys (M < N where keys are aggregated, as in shunted
// self-attention), q, k, v and out each read at their own row stride so a head group works on
// channel slices of wider tensors in place (attend_heads.cc does the work).
#include "attention_tiles.h"
#include "ops.h"

namespace evit::cpu {

void groupAttention(float* out, long ldo, const float* q, long ldq, const float* k, long ldk, const float* v, long ldv,
                    int B, int N, int M, int heads, int headDim) {
  attendHeads({out, (size_t)ldo, q, k, v, (size_t)ldq, (size_t)ldk, (size_t)ldv, B, N, M, heads, headDim}, nullptr);
}

}  // namespace evit::cpu
