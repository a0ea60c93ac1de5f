// The sm_80 instructions evit's tensor-core kernels issue through inline PTX, emulated
// from the PTX ISA: mma.sync.m16n8k16 (f16 / bf16 in, f32 accumulate), ldmatrix.m8n8
// (.x1/.x2/.x4, optionally .trans) and cp.async.cg with commit_group / wait_group.
// mma and ldmatrix are warp collectives; cp.async is per thread and deferred.
#pragma once

#include <cstdint>

namespace evit_simt {

enum class MmaType { F16, BF16 };

// D = A·B + C for one 16 × 8 × 16 step; fragments laid out as the ISA's tables.
void mma16816(MmaType type, float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1, const char* file,
              int line);
// `count` 8 × 8 b16 matrices; lanes 8q..8q+7 give the row addresses of matrix q; r[q] receives
// this lane's element pair of matrix q.
void ldmatrix(int count, bool trans, uint32_t* r, const void* rowAddress, const char* file, int line);
// 16 bytes global → shared: srcBytes (0..16) copied, the rest zero-filled, when a
// wait_group retires the group it was committed in.
void cpAsync16(void* dst, const void* src, int srcBytes, const char* file, int line);
void cpAsyncCommit(const char* file, int line);
void cpAsyncWait(int pending, const char* file, int line);

}  // namespace evit_simt
