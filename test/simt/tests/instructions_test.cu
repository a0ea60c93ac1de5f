// Known-answer tests of the instruction twins and of the 16-bit types, written from the PTX
// ISA's text (fragment tables spelled out register by register below) and not from the
// kernels' index helpers (cuda/tile_index.h), so that a misreading shared by the emulator
// and a kernel cannot pass both: mma.sync.m16n8k16 (f16, bf16), ldmatrix .x1/.x2/.x4 with
// and without .trans, cp.async with src-size 16/8/0 and commit_group / wait_group, and
// float → half / bfloat16 rounding against bit patterns and an independent reference.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <random>
#include <stdexcept>
#include <vector>

#include "evit_simt/control.h"
#include "evit_simt/mma_ptx_twins.h"
#include "harness.h"

using harness::check;
using harness::contains;

unsigned char* smemBytes() {
  extern __shared__ __align__(128) unsigned char evit_dynamic_shared[];
  return evit_dynamic_shared;
}

namespace {

template <class T>
T* deviceAlloc(size_t n) {
  T* p = nullptr;
  if (cudaMalloc(&p, n * sizeof(T)) != cudaSuccess) throw std::runtime_error("cudaMalloc failed");
  return p;
}
template <class T>
void upload(T* d, const std::vector<T>& h) {
  cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice);
}
template <class T>
std::vector<T> download(const T* d, size_t n) {
  std::vector<T> h(n);
  cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost);
  return h;
}
template <class... P, class... A>
cudaError_t launch(void (*k)(P...), dim3 grid, dim3 block, size_t smem, A... args) {
  cudaLaunchConfig_t c = {};
  c.gridDim = grid;
  c.blockDim = block;
  c.dynamicSmemBytes = smem;
  return cudaLaunchKernelEx(&c, k, args...);
}

uint16_t bitsOf(__half h) { return __half_as_ushort(h); }
uint16_t bitsOf(__nv_bfloat16 h) { return __bfloat16_as_ushort(h); }
float f32(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// ---- the 16-bit types ------------------------------------------------------------------

// Round-to-nearest-even by search: the two representable neighbours of x among all finite
// values of the format (sorted), the nearer one, ties to the even bit pattern; past the
// largest finite value by half an ulp or more, infinity.
struct Format {
  std::vector<std::pair<double, uint16_t>> values;  // every finite non-negative value, ascending
  double overflow;                                    // max + ulp(max)/2: rounds to infinity from here
  uint16_t inf;
};

Format formatOf(bool bf16) {
  Format f;
  for (uint32_t b = 0; b < 0x8000; ++b) {
    const float v = bf16 ? f32(b << 16) : __half2float(__ushort_as_half((uint16_t)b));
    if (std::isfinite(v)) f.values.push_back({(double)v, (uint16_t)b});
  }
  std::sort(f.values.begin(), f.values.end());
  const double max = f.values.back().first, prev = f.values[f.values.size() - 2].first;
  f.overflow = max + (max - prev) / 2;
  f.inf = bf16 ? 0x7F80 : 0x7C00;
  return f;
}

uint16_t roundBySearch(const Format& f, float x) {
  const uint16_t sign = std::signbit(x) ? 0x8000 : 0;
  const double a = std::fabs((double)x);
  if (a >= f.overflow) return sign | f.inf;
  auto hi = std::lower_bound(f.values.begin(), f.values.end(), std::make_pair(a, (uint16_t)0));
  if (hi == f.values.end()) return sign | f.values.back().second;  // between the largest value and the overflow
  if (hi->first == a) return sign | hi->second;
  auto lo = hi - 1;
  const double dl = a - lo->first, dh = hi->first - a;
  const auto& pick = dl < dh ? *lo : dh < dl ? *hi : ((lo->second & 1) ? *hi : *lo);
  return sign | pick.second;
}

void sixteenBitTypes() {
  struct Case {
    float x;
    uint16_t half, bf16;
  };
  const float nan = std::nanf("");
  const Case cases[] = {
      {1.0f, 0x3C00, 0x3F80},
      {-2.0f, 0xC000, 0xC000},
      {0.0f, 0x0000, 0x0000},
      {-0.0f, 0x8000, 0x8000},
      {65504.0f, 0x7BFF, 0x4780},
      {65519.99f, 0x7BFF, 0x4780},
      {65520.0f, 0x7C00, 0x4780},  // the first float f16 rounds to infinity
      {1.0f + 0x1p-11f, 0x3C00, 0x3F80},          // a tie in f16: to even
      {1.0f + 3 * 0x1p-11f, 0x3C02, 0x3F80},      // a tie in f16: up to even
      {1.0f + 0x1p-8f, 0x3C04, 0x3F80},           // a tie in bf16: to even
      {1.0f + 3 * 0x1p-8f, 0x3C0C, 0x3F82},       // a tie in bf16: up to even
      {0x1p-14f, 0x0400, 0x3880},                 // smallest normal f16
      {0x1p-24f, 0x0001, 0x3380},                 // smallest subnormal f16
      {0x1p-25f, 0x0000, 0x3300},                 // half of it: a tie, to even (zero)
      {0x1.000002p-25f, 0x0001, 0x3300},          // just above the tie
      {3 * 0x1p-25f, 0x0002, 0x33C0},             // 1.5 subnormal units: a tie, to even
      {1e-7f, 0x0002, 0x33D7},
      {0.1f, 0x2E66, 0x3DCD},
      {3.14159265f, 0x4248, 0x4049},
      {FLT_MAX, 0x7C00, 0x7F80},
      {1e-40f, 0x0000, 0x0001},                   // a float subnormal, exact enough in bf16
      {INFINITY, 0x7C00, 0x7F80},
      {-INFINITY, 0xFC00, 0xFF80},
      {nan, 0x7FFF, 0x7FFF},                      // NaN: the canonical 0x7FFF, as CUDA's conversions
      {-nan, 0x7FFF, 0x7FFF},
  };
  bool half = true, bf = true;
  std::string bad;
  for (const Case& c : cases) {
    const uint16_t h = bitsOf(__float2half_rn(c.x)), b = bitsOf(__float2bfloat16_rn(c.x));
    if (h != c.half) half = false, bad += " f16(" + std::to_string(c.x) + ")=" + std::to_string(h);
    if (b != c.bf16) bf = false, bad += " bf16(" + std::to_string(c.x) + ")=" + std::to_string(b);
  }
  check(half, "__float2half_rn gives the known bit patterns (ties to even, subnormals, overflow, NaN)" + bad);
  check(bf, "__float2bfloat16_rn gives the known bit patterns");
  check(__half2float(__ushort_as_half(0x0001)) == 0x1p-24f && __half2float(__ushort_as_half(0x7BFF)) == 65504.0f &&
            __half2float(__ushort_as_half(0x3555)) == 0.333251953125f &&
            std::isinf(__half2float(__ushort_as_half(0x7C00))) && std::isnan(__half2float(__ushort_as_half(0x7E00))) &&
            std::signbit(__half2float(__ushort_as_half(0x8000))) && __bfloat162float(__ushort_as_bfloat16(0x4049)) == 3.140625f,
        "16-bit → float is exact");
  bool trips = true;
  for (uint32_t b = 0; b < 0x10000; ++b) {
    const __half h = __ushort_as_half((uint16_t)b);
    if (!__hisnan(h) && bitsOf(__float2half_rn(__half2float(h))) != b) trips = false;
    const __nv_bfloat16 g = __ushort_as_bfloat16((uint16_t)b);
    if (!__hisnan(g) && bitsOf(__float2bfloat16_rn(__bfloat162float(g))) != b) trips = false;
  }
  check(trips, "every f16 and bf16 value survives float and back");
  const Format fh = formatOf(false), fb = formatOf(true);
  std::mt19937 rng(7);
  int wrongH = 0, wrongB = 0;
  for (int i = 0; i < 300000; ++i) {
    const uint32_t bits = rng();
    float x = f32(bits);
    if (!std::isfinite(x)) continue;
    // Concentrate on f16's range, with every exponent of bf16 too.
    if (i % 2) x = std::ldexp(std::fmod(x, 1.0f), (int)(rng() % 44) - 28);
    wrongH += bitsOf(__float2half_rn(x)) != roundBySearch(fh, x);
    wrongB += bitsOf(__float2bfloat16_rn(x)) != roundBySearch(fb, x);
  }
  check(wrongH == 0, "f16 rounding of 300k floats agrees with a nearest-value search (" + std::to_string(wrongH) + " differ)");
  check(wrongB == 0, "bf16 rounding of 300k floats agrees with a nearest-value search (" + std::to_string(wrongB) + " differ)");
  const __half2 p = __floats2half2_rn(1.0f, -2.0f);
  uint32_t reg;
  std::memcpy(&reg, &p, 4);
  check(reg == 0xC0003C00u && sizeof(__half2) == 4 && alignof(__half2) == 4 && __low2float(p) == 1.0f &&
            __high2float(p) == -2.0f,
        "__floats2half2_rn puts the first value in the low half of the register");
  check(alignof(float4) == 16 && alignof(float2) == 8 && alignof(int4) == 16 && alignof(uint2) == 8 &&
            sizeof(__nv_bfloat16) == 2 && sizeof(dim3) == 12,
        "vector types have CUDA's alignment");
}

// ---- mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.{f16,bf16}.f32 -------------------
// PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point type", with
// groupID = laneid >> 2 and threadID_in_group = laneid % 4, register by register:
//   A (16 × 16, row-major), four .f16x2 registers {a0,a1} {a2,a3} {a4,a5} {a6,a7}:
//     a0, a1: row groupID,     columns 2·threadID_in_group + 0, 1
//     a2, a3: row groupID + 8, columns 2·threadID_in_group + 0, 1
//     a4, a5: row groupID,     columns 2·threadID_in_group + 8, 9
//     a6, a7: row groupID + 8, columns 2·threadID_in_group + 8, 9
//   B (16 × 8, column-major), two registers {b0,b1} {b2,b3}:
//     b0, b1: rows 2·threadID_in_group + 0, 1, column groupID
//     b2, b3: rows 2·threadID_in_group + 8, 9, column groupID
//   C, D (16 × 8 fp32), four registers c0..c3:
//     c0, c1: row groupID,     columns 2·threadID_in_group + 0, 1
//     c2, c3: row groupID + 8, columns 2·threadID_in_group + 0, 1
// The lower-numbered element of a register pair is its low 16 bits.
struct Coord {
  int row, col;
};
const Coord kA[4][2] = {{{0, 0}, {0, 1}}, {{8, 0}, {8, 1}}, {{0, 8}, {0, 9}}, {{8, 8}, {8, 9}}};  // + (g, 2t)
const Coord kB[2][2] = {{{0, 0}, {1, 0}}, {{8, 0}, {9, 0}}};                                      // + (2t, g)
const Coord kC[4] = {{0, 0}, {0, 1}, {8, 0}, {8, 1}};                                             // + (g, 2t)

template <class T>
__global__ void mmaOnce(const T* A, const T* B, const float* C, float* D) {
  const int lane = threadIdx.x, g = lane >> 2, t = lane % 4;
  uint32_t a[4], b[2];
  float c[4];
  for (int r = 0; r < 4; ++r) {
    uint16_t lo = bitsOf(A[(g + kA[r][0].row) * 16 + 2 * t + kA[r][0].col]);
    uint16_t hi = bitsOf(A[(g + kA[r][1].row) * 16 + 2 * t + kA[r][1].col]);
    a[r] = lo | (uint32_t)hi << 16;
  }
  for (int r = 0; r < 2; ++r) {
    uint16_t lo = bitsOf(B[(2 * t + kB[r][0].row) * 8 + g + kB[r][0].col]);
    uint16_t hi = bitsOf(B[(2 * t + kB[r][1].row) * 8 + g + kB[r][1].col]);
    b[r] = lo | (uint32_t)hi << 16;
  }
  for (int r = 0; r < 4; ++r) c[r] = C[(g + kC[r].row) * 8 + 2 * t + kC[r].col];
  evit::cuda::mma16816<T>(c, a, b[0], b[1]);
  for (int r = 0; r < 4; ++r) D[(g + kC[r].row) * 8 + 2 * t + kC[r].col] = c[r];
}

template <class T>
T from(float v);
template <>
__half from<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__nv_bfloat16 from<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
template <class T>
float back(T v);
template <>
float back<__half>(__half v) {
  return __half2float(v);
}
template <>
float back<__nv_bfloat16>(__nv_bfloat16 v) {
  return __bfloat162float(v);
}

template <class T>
std::vector<float> runMma(const std::vector<T>& A, const std::vector<T>& B, const std::vector<float>& C) {
  T* dA = deviceAlloc<T>(256);
  T* dB = deviceAlloc<T>(128);
  float* dC = deviceAlloc<float>(128);
  float* dD = deviceAlloc<float>(128);
  upload(dA, A);
  upload(dB, B);
  upload(dC, C);
  if (launch(mmaOnce<T>, 1, 32, 0, dA, dB, dC, dD) != cudaSuccess) throw std::runtime_error("mma launch failed");
  auto D = download(dD, 128);
  cudaFree(dA);
  cudaFree(dB);
  cudaFree(dC);
  cudaFree(dD);
  return D;
}

template <class T>
void mma(const char* type) {
  const std::string ty = type;
  // Known answer: A picks row (i + 3) % 16 of B, so D[i][j] = C[i][j] + B[(i + 3) % 16][j], with
  // every B and C element distinct: any misplaced element of any fragment changes D.
  std::vector<T> A(256, from<T>(0.0f)), B(128);
  std::vector<float> C(128);
  for (int i = 0; i < 16; ++i) A[i * 16 + (i + 3) % 16] = from<T>(1.0f);
  for (int k = 0; k < 16; ++k)
    for (int j = 0; j < 8; ++j) B[k * 8 + j] = from<T>((float)(k * 8 + j));  // 0..127: exact in f16 and bf16
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 8; ++j) C[i * 8 + j] = 1000.0f * (i + 1) + 0.25f * j;
  bool known = true;
  std::vector<std::vector<float>> runs;
  for (const auto& s : harness::schedules()) {
    evit_simt::setSchedule(s);
    runs.push_back(runMma(A, B, C));
  }
  evit_simt::setSchedule({});
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 8; ++j)
      known = known && runs[0][i * 8 + j] == C[i * 8 + j] + (float)(((i + 3) % 16) * 8 + j);
  check(known, ty + " mma: a permutation A, distinct B and C give the known D");
  check(runs[0] == runs[1] && runs[0] == runs[2], ty + " mma: the same D under every schedule");

  // A second known answer with every k contributing: A[i][k] = 1 for k ≤ i, B[k][j] = 2^(k mod 4) · (j + 1).
  std::fill(A.begin(), A.end(), from<T>(0.0f));
  for (int i = 0; i < 16; ++i)
    for (int k = 0; k <= i; ++k) A[i * 16 + k] = from<T>(1.0f);
  for (int k = 0; k < 16; ++k)
    for (int j = 0; j < 8; ++j) B[k * 8 + j] = from<T>((float)((1 << (k % 4)) * (j + 1)));
  std::fill(C.begin(), C.end(), 0.5f);
  auto D = runMma(A, B, C);
  bool prefix = true;
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 8; ++j) {
      float want = 0.5f;
      for (int k = 0; k <= i; ++k) want += (float)((1 << (k % 4)) * (j + 1));
      prefix = prefix && D[i * 8 + j] == want;
    }
  check(prefix, ty + " mma: lower-triangular A sums the first i + 1 rows of B");

  // Random fragments against float64: fp32 accumulation of exact products.
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> u(-2.0f, 2.0f);
  double worst = 0;
  for (int trial = 0; trial < 20; ++trial) {
    for (auto& a : A) a = from<T>(u(rng));
    for (auto& b : B) b = from<T>(u(rng));
    for (auto& c : C) c = u(rng) * 4;
    D = runMma(A, B, C);
    for (int i = 0; i < 16; ++i)
      for (int j = 0; j < 8; ++j) {
        double ref = C[i * 8 + j], scale = std::fabs(C[i * 8 + j]);
        for (int k = 0; k < 16; ++k) {
          const double p = (double)back(A[i * 16 + k]) * back(B[k * 8 + j]);
          ref += p;
          scale += std::fabs(p);
        }
        worst = std::max(worst, std::fabs(D[i * 8 + j] - ref) / scale);
      }
  }
  check(worst <= 0x1p-22, ty + " mma: 20 random fragments within 2^-22 · Σ|terms| of float64 (worst " +
                              std::to_string(worst) + ")");
  evit_simt::clearLaunchRecords();
  runMma(A, B, C);
  const auto rec = evit_simt::launchRecords();
  check(rec.size() == 1 && rec[0].mma == 1, ty + " mma: the launch record counts one warp-level mma");
}

// ---- ldmatrix.sync.aligned.m8n8.{x1,x2,x4}{,.trans}.shared.b16 -------------------------
// PTX ISA, "ldmatrix": threads 0-7 give the row addresses of matrix 0, 8-15 of matrix 1,
// 16-23 of 2, 24-31 of 3 (x1: only threads 0-7, x2: 0-15 are read). Each thread receives,
// of every matrix, one .b32 register holding a row fragment: thread l gets row l / 4,
// elements 2·(l % 4) and 2·(l % 4) + 1. With .trans the matrix is transposed on the way:
// thread l gets elements (row 2·(l % 4), column l / 4) and (row 2·(l % 4) + 1, column l / 4).
// Rows sit at scattered 16-byte slots: row (q, r) at slot kSlot(q, r), so a thread that
// used another's address would read a wrong row.
__device__ int slotOf(int q, int r) { return (q * 8 + r) * 5 % 32 + 1; }  // 5 is coprime to 32

template <int COUNT, bool TRANS>
__global__ void ldmatrixOnce(uint32_t* out, int misalign, int outside) {
  uint16_t* s = reinterpret_cast<uint16_t*>(smemBytes());
  const int lane = threadIdx.x;
  // Matrix q, row r, element c = 1000·q + 10·r + c + 1.
  for (int q = 0; q < 4; ++q)
    for (int c = 0; c < 8; ++c) s[slotOf(q, lane % 8) * 8 + c] = (uint16_t)(1000 * q + 10 * (lane % 8) + c + 1);
  __syncwarp();
  const int q = lane / 8, r = lane % 8;
  const unsigned char* addr = reinterpret_cast<unsigned char*>(s + slotOf(q, r) * 8);
  // Threads whose address the instruction ignores give one it could not use.
  if (q >= COUNT) addr = reinterpret_cast<const unsigned char*>(out) + 3;
  if (misalign && lane == misalign) addr += 4;
  if (outside && lane == outside) addr = smemBytes() + 34 * 16;  // just past the launch's 544 bytes
  uint32_t regs[4] = {0, 0, 0, 0};
  if constexpr (COUNT == 1 && !TRANS) evit::cuda::ldmatrixX1(reinterpret_cast<uint32_t(&)[1]>(regs), addr);
  if constexpr (COUNT == 2 && !TRANS) evit::cuda::ldmatrixX2(reinterpret_cast<uint32_t(&)[2]>(regs), addr);
  if constexpr (COUNT == 4 && !TRANS) evit::cuda::ldmatrixX4(regs, addr);
  if constexpr (COUNT == 1 && TRANS) evit::cuda::ldmatrixX1Trans(reinterpret_cast<uint32_t(&)[1]>(regs), addr);
  if constexpr (COUNT == 2 && TRANS) evit::cuda::ldmatrixX2Trans(reinterpret_cast<uint32_t(&)[2]>(regs), addr);
  if constexpr (COUNT == 4 && TRANS) evit::cuda::ldmatrixX4Trans(regs, addr);
  for (int i = 0; i < 4; ++i) out[lane * 4 + i] = regs[i];
}

template <int COUNT, bool TRANS>
void ldmatrix() {
  const std::string what = "ldmatrix .x" + std::to_string(COUNT) + (TRANS ? ".trans" : "");
  uint32_t* d = deviceAlloc<uint32_t>(128);
  std::vector<std::vector<uint32_t>> runs;
  for (const auto& s : harness::schedules()) {
    evit_simt::setSchedule(s);
    check(launch(ldmatrixOnce<COUNT, TRANS>, 1, 32, 34 * 16, d, 0, 0) == cudaSuccess,
          what + " (" + evit_simt::scheduleName(s) + "): unused lanes' addresses are ignored");
    runs.push_back(download(d, 128));
  }
  evit_simt::setSchedule({});
  bool ok = true;
  for (int lane = 0; lane < 32; ++lane)
    for (int q = 0; q < 4; ++q) {
      uint32_t want = 0;
      if (q < COUNT) {
        const int row0 = TRANS ? 2 * (lane % 4) : lane / 4, col0 = TRANS ? lane / 4 : 2 * (lane % 4);
        const int row1 = TRANS ? row0 + 1 : row0, col1 = TRANS ? col0 : col0 + 1;
        want = (uint32_t)(1000 * q + 10 * row0 + col0 + 1) | (uint32_t)(1000 * q + 10 * row1 + col1 + 1) << 16;
      }
      ok = ok && runs[0][lane * 4 + q] == want;
    }
  check(ok, what + ": every thread's registers hold the ISA's row fragments");
  check(runs[0] == runs[1] && runs[0] == runs[2], what + ": the same under every schedule");
  cudaFree(d);
}

void ldmatrixFaults() {
  uint32_t* d = deviceAlloc<uint32_t>(128);
  const cudaError_t e = launch(ldmatrixOnce<4, false>, 1, 32, 34 * 16, d, 9, 0);
  check(e == cudaErrorMisalignedAddress && contains(evit_simt::lastFault(), "lane 9") &&
            contains(evit_simt::lastFault(), "not 16-byte aligned") &&
            contains(evit_simt::lastFault(), "tests/instructions_test.cu:"),
        std::string("a misaligned row address: cudaErrorMisalignedAddress, with lane and line: ") + evit_simt::lastFault());
  evit_simt::clearStickyError();
  const cudaError_t o = launch(ldmatrixOnce<4, false>, 1, 32, 34 * 16, d, 0, 20);
  check(o == cudaErrorIllegalAddress && contains(evit_simt::lastFault(), "lane 20") &&
            contains(evit_simt::lastFault(), "outside the block's 544 bytes"),
        std::string("a row past the launch's shared memory: cudaErrorIllegalAddress: ") + evit_simt::lastFault());
  evit_simt::clearStickyError();
  evit_simt::clearLaunchRecords();
  launch(ldmatrixOnce<2, true>, 1, 32, 34 * 16, d, 0, 0);
  const auto rec = evit_simt::launchRecords();
  check(rec.size() == 1 && rec[0].ldmatrix == 1 && rec[0].ldmatrixBytes == 256,
        "the launch record counts one ldmatrix of 256 bytes");
  cudaFree(d);
}

// ---- cp.async.cg.shared.global [dst], [src], 16, src-size; commit_group; wait_group N ---
// PTX ISA, "cp.async": copies src-size bytes and zero-fills the rest of the 16; the copy is
// asynchronous and complete only once a cp.async.wait_group retires its group (wait_group N:
// until at most N of the thread's most recent committed groups are pending).
constexpr int kLate = 64;  // thread that reads another's destination

__global__ void cpAsyncSemantics(const unsigned char* src, unsigned char* out, int srcBytes) {
  unsigned char* s = smemBytes();
  const int t = threadIdx.x;
  unsigned char* mine = s + t * 32;
  using namespace evit::cuda;
  if (t < 32) {
    cpAsync16(mine, src + t * 16, srcBytes);  // group 1
    cpAsyncCommit();
    cpAsync16(mine + 16, src + 512 + t * 16, 16);  // group 2
    cpAsyncCommit();
    cpAsync16(s + 2048 + t * 16, src, 16);  // never committed: dropped at exit
    std::memcpy(out + t * 128, mine, 32);  // before any wait: both still pending
    cpAsyncWait<2>();
    std::memcpy(out + t * 128 + 32, mine, 32);  // wait_group 2 with 2 pending retires nothing
    cpAsyncWait<1>();
    std::memcpy(out + t * 128 + 64, mine, 32);  // group 1 landed, group 2 still pending
  }
  __syncthreads();
  // Another thread, after the barrier but before the writer's last wait: group 2 not visible.
  if (t == kLate) std::memcpy(out + 32 * 128, s + 16, 16);
  __syncthreads();
  if (t < 32) {
    cpAsyncWait<0>();
    std::memcpy(out + t * 128 + 96, mine, 32);
  }
  __syncthreads();
  if (t == kLate) std::memcpy(out + 32 * 128 + 16, s + 16, 16);
  if (t == kLate) std::memcpy(out + 32 * 128 + 32, s + 2048, 16);
}

void cpAsync() {
  std::vector<unsigned char> src(1024);
  for (int i = 0; i < 1024; ++i) src[i] = (unsigned char)(i * 7 + 3);
  unsigned char* dSrc = deviceAlloc<unsigned char>(1024);
  unsigned char* dOut = deviceAlloc<unsigned char>(32 * 128 + 48);
  upload(dSrc, src);
  for (int bytes : {16, 8, 0}) {
    std::vector<std::vector<unsigned char>> runs;
    for (const auto& s : harness::schedules()) {
      evit_simt::setSchedule(s);
      launch(cpAsyncSemantics, 1, 96, 4096, dSrc, dOut, bytes);
      runs.push_back(download(dOut, 32 * 128 + 48));
    }
    evit_simt::setSchedule({});
    const auto& o = runs[0];
    bool pending = true, none = true, first = true, all = true, late = true;
    for (int t = 0; t < 32; ++t) {
      const unsigned char* r = &o[t * 128];
      for (int i = 0; i < 32; ++i) {
        pending = pending && r[i] == 0xFF && r[32 + i] == 0xFF;
        none = none && r[32 + i] == 0xFF;
        const unsigned char g1 = i < bytes ? src[t * 16 + i] : 0, g2 = src[512 + t * 16 + i - 16];
        first = first && r[64 + i] == (i < 16 ? g1 : 0xFF);
        all = all && r[96 + i] == (i < 16 ? g1 : g2);
      }
    }
    for (int i = 0; i < 16; ++i)
      late = late && o[32 * 128 + i] == 0xFF && o[32 * 128 + 16 + i] == src[512 + i] && o[32 * 128 + 32 + i] == 0xFF;
    const std::string b = "cp.async src-size " + std::to_string(bytes) + ": ";
    check(pending && none, b + "before the retiring wait the destination still reads as fresh (NaN) shared memory");
    check(first, b + "wait_group 1 retires the older group: " + std::to_string(bytes) + " bytes copied, the rest zeros");
    check(all, b + "wait_group 0 retires the newer one too");
    check(late, b + "another thread sees a copy only after the writer's wait and a barrier; uncommitted copies are dropped");
    check(runs[0] == runs[1] && runs[0] == runs[2], b + "the same under every schedule");
  }
  evit_simt::clearLaunchRecords();
  launch(cpAsyncSemantics, 1, 96, 4096, dSrc, dOut, 8);
  const auto rec = evit_simt::launchRecords();
  check(rec.size() == 1 && rec[0].cpAsync == 96 && rec[0].cpAsyncBytes == 32 * (8 + 16 + 16),
        "the launch record counts 96 cp.async and the global bytes they read");
  cudaFree(dSrc);
  cudaFree(dOut);
}

__global__ void cpAsyncBad(const unsigned char* src, int mode) {
  unsigned char* s = smemBytes();
  using namespace evit::cuda;
  if (mode == 0) cpAsync16(s + 8, src, 16);                       // misaligned destination
  if (mode == 1) cpAsync16(s + 256, src, 16);                     // destination past the launch's 256 bytes
  if (mode == 2) cpAsync16(s, src + 1024, 16);                    // source past the allocation
  if (mode == 3) cpAsync16(s, src + 4, 4);                        // misaligned source
  if (mode == 4) cpAsync16(s, src, 17);                           // src-size past the copy size
  // Host stack memory, aligned: fine with src-size 0, which reads nothing.
  if (mode == 5) cpAsync16(s, reinterpret_cast<const unsigned char*>(reinterpret_cast<uintptr_t>(&mode) & ~(uintptr_t)15), 0);
  cpAsyncCommit();
  cpAsyncWait<0>();
}

void cpAsyncFaults() {
  unsigned char* d = deviceAlloc<unsigned char>(1024);
  const struct {
    int mode;
    cudaError_t want;
    const char* text;
    const char* what;
  } cases[] = {
      {0, cudaErrorMisalignedAddress, "destination", "a misaligned destination"},
      {1, cudaErrorIllegalAddress, "outside the block's 256 bytes", "a destination past the dynamic shared memory"},
      {2, cudaErrorIllegalAddress, "not inside device memory", "a source past its allocation"},
      {3, cudaErrorMisalignedAddress, "source", "a misaligned source"},
      {4, cudaErrorIllegalInstruction, "src-size 17", "src-size 17"},
  };
  for (const auto& c : cases) {
    const cudaError_t e = launch(cpAsyncBad, 1, 1, 256, d, c.mode);
    const std::string msg = evit_simt::lastFault();
    check(e == c.want && contains(msg, c.text) && contains(msg, "tests/instructions_test.cu:"),
          std::string("cp.async with ") + c.what + ": " + cudaGetErrorName(e) + ", " + msg);
    evit_simt::clearStickyError();
  }
  check(launch(cpAsyncBad, 1, 1, 256, d, 5) == cudaSuccess, "cp.async with src-size 0 reads no source");
  cudaFree(d);
}

}  // namespace

int main() {
  return harness::main([] {
    sixteenBitTypes();
    mma<__half>("f16");
    mma<__nv_bfloat16>("bf16");
    ldmatrix<1, false>();
    ldmatrix<2, false>();
    ldmatrix<4, false>();
    ldmatrix<1, true>();
    ldmatrix<2, true>();
    ldmatrix<4, true>();
    ldmatrixFaults();
    cpAsync();
    cpAsyncFaults();
  });
}
