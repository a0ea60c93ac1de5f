// Instruction twins (PTX ISA 9.7.14.5.8 "Matrix Fragments for mma.m16n8k16 with floating
// point type", 9.7.14.5.15 "ldmatrix", 9.7.9.25 "cp.async"). Operands are checked as the
// hardware would fault on them: shared addresses inside the block's dynamic shared memory
// and aligned, global sources inside device memory.
#include <cstdio>
#include <cstring>

#include "evit_simt/half.h"
#include "evit_simt/twins.h"
#include "internal.h"

namespace evit_simt {

namespace {

struct MmaArgs {
  MmaType type;
  float* c;
  const uint32_t* a;
  uint32_t b0, b1;
};

float element(MmaType t, uint32_t reg, int half) {
  const uint16_t bits = (uint16_t)(half ? reg >> 16 : reg & 0xFFFFu);
  return t == MmaType::F16 ? halfBitsToFloat(bits) : bfloat16BitsToFloat(bits);
}

// Fragment coordinates, as the ISA gives them: groupID = lane >> 2, threadID_in_group = lane % 4.
//   A (16 × 16, elements a0..a7, two per register): row groupID for a0, a1, a4, a5, groupID + 8
//     otherwise; column 2·threadID_in_group + (i & 1), + 8 for i >= 4.
//   B (16 × 8, b0..b3): row 2·threadID_in_group + (i & 1), + 8 for i >= 2; column groupID.
//   C, D (16 × 8, c0..c3): row groupID for c0, c1, groupID + 8 otherwise; column 2·threadID_in_group + (i & 1).
void mmaComplete(Fiber* const* lanes, unsigned, void*) {
  float A[16][16], B[16][8], C[16][8];
  const MmaType type = static_cast<MmaArgs*>(lanes[0]->payload)->type;
  for (int lane = 0; lane < 32; ++lane) {
    const MmaArgs& m = *static_cast<MmaArgs*>(lanes[lane]->payload);
    if (m.type != type) fault(cudaErrorIllegalInstruction, "mma.sync lanes disagree on the element type", lanes[lane]->site);
    const int g = lane >> 2, t = lane & 3;
    for (int i = 0; i < 8; ++i) {
      const int row = (i < 2 || (i >= 4 && i < 6)) ? g : g + 8;
      const int col = 2 * t + (i & 1) + (i >= 4 ? 8 : 0);
      A[row][col] = element(type, m.a[i / 2], i & 1);
    }
    for (int i = 0; i < 4; ++i) {
      const int row = 2 * t + (i & 1) + (i >= 2 ? 8 : 0);
      B[row][g] = element(type, i < 2 ? m.b0 : m.b1, i & 1);
    }
    for (int i = 0; i < 4; ++i) C[i < 2 ? g : g + 8][2 * t + (i & 1)] = m.c[i];
  }
  // Products of two 16-bit values are exact in double, and so is their sum here up to
  // extreme exponent spreads; D is rounded to fp32 once.
  float D[16][8];
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 8; ++j) {
      double acc = C[i][j];
      for (int k = 0; k < 16; ++k) acc += (double)A[i][k] * (double)B[k][j];
      D[i][j] = (float)acc;
    }
  for (int lane = 0; lane < 32; ++lane) {
    const MmaArgs& m = *static_cast<MmaArgs*>(lanes[lane]->payload);
    const int g = lane >> 2, t = lane & 3;
    for (int i = 0; i < 4; ++i) m.c[i] = D[i < 2 ? g : g + 8][2 * t + (i & 1)];
  }
  ++currentRecord().mma;
}

struct LdmatrixArgs {
  int count;
  bool trans;
  uint32_t* r;
  const void* address;
};

std::string hex(const void* p) {
  char b[32];
  std::snprintf(b, sizeof b, "%p", p);
  return b;
}

// An address the shared-memory instructions may use: `bytes` inside the block's dynamic
// shared memory, aligned to `align`.
void checkShared(const void* p, size_t bytes, size_t align, const std::string& what, const Site& site) {
  const auto* a = static_cast<const unsigned char*>(p);
  const unsigned char* base = sharedBase();
  if (a < base || a + bytes > base + sharedBytes())
    fault(cudaErrorIllegalAddress,
          what + " " + hex(p) + " is outside the block's " + std::to_string(sharedBytes()) +
              " bytes of dynamic shared memory",
          site);
  if ((uintptr_t)p % align)
    fault(cudaErrorMisalignedAddress, what + " " + hex(p) + " is not " + std::to_string(align) + "-byte aligned", site);
}

void ldmatrixComplete(Fiber* const* lanes, unsigned, void*) {
  const auto& first = *static_cast<LdmatrixArgs*>(lanes[0]->payload);
  uint16_t M[4][8][8];
  for (int q = 0; q < first.count; ++q)
    for (int row = 0; row < 8; ++row) {
      const Fiber& f = *lanes[8 * q + row];
      const auto& a = *static_cast<LdmatrixArgs*>(f.payload);
      if (a.count != first.count || a.trans != first.trans)
        fault(cudaErrorIllegalInstruction, "ldmatrix lanes disagree on the shape", f.site);
      checkShared(a.address, 16, 16,
                  "ldmatrix row address of lane " + std::to_string(8 * q + row) + " (matrix " + std::to_string(q) +
                      ", row " + std::to_string(row) + ")",
                  f.site);
      std::memcpy(M[q][row], a.address, 16);
    }
  for (int lane = 0; lane < 32; ++lane) {
    const auto& a = *static_cast<LdmatrixArgs*>(lanes[lane]->payload);
    const int r = lane / 4, c = 2 * (lane % 4);
    for (int q = 0; q < first.count; ++q) {
      const uint16_t lo = first.trans ? M[q][c][r] : M[q][r][c];
      const uint16_t hi = first.trans ? M[q][c + 1][r] : M[q][r][c + 1];
      a.r[q] = (uint32_t)lo | (uint32_t)hi << 16;
    }
  }
  ++currentRecord().ldmatrix;
  currentRecord().ldmatrixBytes += 128u * first.count;
}

void perform(const CpAsyncCopy& c) {
  if (c.srcBytes) std::memcpy(c.dst, c.src, c.srcBytes);
  if (c.srcBytes < 16) std::memset(static_cast<unsigned char*>(c.dst) + c.srcBytes, 0, 16 - c.srcBytes);
}

}  // namespace

void mma16816(MmaType type, float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1, const char* file,
              int line) {
  MmaArgs args{type, c, a, b0, b1};
  warpCollective(WaitKind::Mma, 0xFFFFFFFFu, &args, Site{file, line}, mmaComplete);
}

void ldmatrix(int count, bool trans, uint32_t* r, const void* rowAddress, const char* file, int line) {
  LdmatrixArgs args{count, trans, r, rowAddress};
  warpCollective(WaitKind::Ldmatrix, 0xFFFFFFFFu, &args, Site{file, line}, ldmatrixComplete);
}

void cpAsync16(void* dst, const void* src, int srcBytes, const char* file, int line) {
  const Site site{file, line};
  if (!inKernel()) fault(cudaErrorLaunchFailure, "cp.async outside a kernel", site);
  if (srcBytes < 0 || srcBytes > 16)
    fault(cudaErrorIllegalInstruction, "cp.async src-size " + std::to_string(srcBytes) + " is not in 0..16", site);
  checkShared(dst, 16, 16, "cp.async destination", site);
  if ((uintptr_t)src % 16)
    fault(cudaErrorMisalignedAddress, "cp.async source " + hex(src) + " is not 16-byte aligned", site);
  if (srcBytes > 0 && !isDeviceRange(src, (size_t)srcBytes, true))
    fault(cudaErrorIllegalAddress,
          "cp.async source " + hex(src) + " (" + std::to_string(srcBytes) + " bytes) is not inside device memory",
          site);
  currentFiber().openGroup.push_back(CpAsyncCopy{dst, src, srcBytes});
  LaunchRecord& r = currentRecord();
  ++r.cpAsync;
  r.cpAsyncBytes += (uint64_t)srcBytes;
  countGlobalRead(src, (size_t)srcBytes);
}

void cpAsyncCommit(const char* file, int line) {
  if (!inKernel()) fault(cudaErrorLaunchFailure, "cp.async.commit_group outside a kernel", Site{file, line});
  Fiber& f = currentFiber();
  f.committed.push_back(std::move(f.openGroup));
  f.openGroup.clear();
}

void retireCpAsyncGroups(Fiber& f, int keep) {
  while ((int)f.committed.size() > keep) {
    for (const CpAsyncCopy& c : f.committed.front()) perform(c);
    f.committed.pop_front();
  }
}

void cpAsyncWait(int pending, const char* file, int line) {
  if (!inKernel()) fault(cudaErrorLaunchFailure, "cp.async.wait_group outside a kernel", Site{file, line});
  if (pending < 0) fault(cudaErrorIllegalInstruction, "cp.async.wait_group with a negative count", Site{file, line});
  retireCpAsyncGroups(currentFiber(), pending);
}

}  // namespace evit_simt
