// Every kernel of cuda/ run on the emulator against float64 references, at small awkward
// shapes (edge tiles, odd sizes, the three tensor-core GEMM tilings and split-K, every attention tiling, attention
// of N queries against M keys at separate row strides),
// in f32, f16 and bf16, each under forward, reverse and random:12345 thread orders with
// bit-identical results across them. Tolerances are docs/CUDA.md's (test/gpu/ops.test.js):
// relative to each element's Σ|terms|, 2e-5 for f32, 1.5e-3 for f16, 8e-3 for bf16.
#include <cmath>
#include <cstring>
#include <functional>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "attention_internal.h"
#include "conv_layout.h"
#include "device_properties.h"
#include "evit_simt/control.h"
#include "gemm_tiles.h"
#include "harness.h"
#include "kernels.h"
#include "linear_internal.h"
#include "reference.h"
#include "../../../src/backend/pixels.h"

using harness::check;
using harness::contains;
using harness::errorOf;
using namespace evit::cuda;
using Bytes = std::vector<unsigned char>;

namespace {

template <class T>
struct Ty;
template <>
struct Ty<float> {
  static constexpr const char* name = "f32";
  static constexpr double rtol = 2e-5;
  static float to(float v) { return v; }
  static double back(float v) { return v; }
};
template <>
struct Ty<__half> {
  static constexpr const char* name = "f16";
  static constexpr double rtol = 1.5e-3;
  static __half to(float v) { return __float2half_rn(v); }
  static double back(__half v) { return __half2float(v); }
};
template <>
struct Ty<__nv_bfloat16> {
  static constexpr const char* name = "bf16";
  static constexpr double rtol = 8e-3;
  static __nv_bfloat16 to(float v) { return __float2bfloat16_rn(v); }
  static double back(__nv_bfloat16 v) { return __bfloat162float(v); }
};
constexpr double kAtol = 1e-6;

// A device buffer of n elements (plus `pad` before them, for misaligned views).
template <class T>
struct Buf {
  explicit Buf(size_t count, size_t padding = 0) : n(count), pad(padding) {
    if (cudaMalloc(&base, (n + pad) * sizeof(T) + 16) != cudaSuccess) throw std::runtime_error("cudaMalloc failed");
  }
  ~Buf() { cudaFree(base); }
  Buf(const Buf&) = delete;
  T* p() const { return base + pad; }
  void up(const std::vector<T>& h) const { cudaMemcpy(p(), h.data(), n * sizeof(T), cudaMemcpyHostToDevice); }
  void poison() const { cudaMemset(p(), 0xFF, n * sizeof(T)); }  // NaN: an element never written shows
  Bytes bytes() const {
    Bytes b(n * sizeof(T));
    cudaMemcpy(b.data(), p(), b.size(), cudaMemcpyDeviceToHost);
    return b;
  }
  T* base = nullptr;
  size_t n, pad;
};

template <class T>
std::vector<T> as(const Bytes& b, size_t offsetBytes, size_t n) {
  std::vector<T> v(n);
  if (offsetBytes + n * sizeof(T) <= b.size()) std::memcpy(v.data(), b.data() + offsetBytes, n * sizeof(T));
  return v;
}
template <class T>
std::vector<double> widen(const std::vector<T>& v) {
  std::vector<double> d(v.size());
  for (size_t i = 0; i < v.size(); ++i) d[i] = Ty<T>::back(v[i]);
  return d;
}
Bytes concat(std::initializer_list<Bytes> parts) {
  Bytes all;
  for (const Bytes& p : parts) all.insert(all.end(), p.begin(), p.end());
  return all;
}

// argv[2]: run only the tests of one op ("convert", "layerNorm", "linear", "attention", "patch", "conv",
// "depthwise", "mean").
std::string opFilter;
bool wanted(const char* op) { return opFilter.empty() || opFilter == op; }

std::mt19937 rng(2024);
std::vector<float> uniform(size_t n, float lo, float hi) {
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}
template <class T>
std::vector<T> rounded(const std::vector<float>& v) {
  std::vector<T> r(v.size());
  for (size_t i = 0; i < v.size(); ++i) r[i] = Ty<T>::to(v[i]);
  return r;
}

// Runs `run` under each schedule: it launches and returns the outputs' bytes. A kernel error
// (CudaError) fails the check; the launches' records are kept for the path checks.
std::vector<evit_simt::LaunchRecord> lastRecords;
bool scheduled(const std::string& label, const std::function<Bytes()>& run, Bytes& first) {
  std::vector<Bytes> r;
  for (const auto& s : harness::schedules()) {
    evit_simt::setSchedule(s);
    evit_simt::clearLaunchRecords();
    try {
      r.push_back(run());
    } catch (const std::exception& e) {
      evit_simt::setSchedule({});
      evit_simt::clearStickyError();
      check(false, label + " (" + evit_simt::scheduleName(s) + "): " + e.what());
      return false;
    }
    lastRecords = evit_simt::launchRecords();
  }
  evit_simt::setSchedule({});
  first = r[0];
  return check(r[0] == r[1] && r[0] == r[2], label + ": bit-identical under forward, reverse and random:12345");
}

std::string ranKernel() {
  std::string s;
  for (const auto& r : lastRecords) s += (s.empty() ? "" : ", ") + r.kernel + " <<<" + std::to_string(r.grid.x) + "," +
                                         std::to_string(r.grid.y) + "," + std::to_string(r.grid.z) + " x " +
                                         std::to_string(r.block.x) + ">>>";
  return s;
}
bool ran(const std::string& part) {
  for (const auto& r : lastRecords)
    if (contains(r.kernel, part)) return true;
  return false;
}

void setSms(int sms, int optin = 232448) {
  auto c = evit_simt::deviceConfig();
  c.multiProcessorCount = sms;
  c.sharedMemPerBlockOptin = optin;
  evit_simt::setDeviceConfig(c);
  forgetDeviceProperties();  // the launchers cache the device's properties
}

// ---- convert -----------------------------------------------------------------------------

template <class T>
void convertTest() {
  const std::string label = std::string("convert ") + Ty<T>::name;
  std::vector<float> src = uniform(1037, -4, 4);
  for (size_t i = 0; i < src.size(); i += 3) src[i] = std::ldexp(src[i], (int)(i % 50) - 30);
  const float specials[] = {0.0f, -0.0f, INFINITY, -INFINITY, std::nanf(""), 65504.0f, 65520.0f, 0x1p-25f, 3 * 0x1p-25f,
                            1.0f + 0x1p-11f, 1.0f + 0x1p-8f, 3.0e38f, 1e-40f};
  std::copy(std::begin(specials), std::end(specials), src.begin());
  Buf<float> s(src.size());
  Buf<T> d(src.size());
  s.up(src);
  Bytes out;
  if (!scheduled(label, [&] {
        d.poison();
        convert<T>(d.p(), s.p(), (long)src.size(), nullptr);
        return d.bytes();
      }, out))
    return;
  bool ok = true;
  if constexpr (std::is_same_v<T, float>) {
    ok = std::memcmp(out.data(), src.data(), out.size()) == 0;
  } else {
    static const reference::Format f = std::is_same_v<T, __half>
        ? reference::format([](uint16_t b) { return __half2float(__ushort_as_half(b)); }, 0x7C00)
        : reference::format([](uint16_t b) { return __bfloat162float(__ushort_as_bfloat16(b)); }, 0x7F80);
    const auto got = as<uint16_t>(out, 0, src.size());
    for (size_t i = 0; i < src.size(); ++i) ok = ok && got[i] == reference::roundBySearch(f, src[i]);
  }
  check(ok, label + ": every element rounded to nearest even (specials, subnormals, overflow included)");
}

// ---- layerNorm ---------------------------------------------------------------------------

template <class T>
void layerNormTest(int rows, int C, long stride, bool gelu = false) {
  const std::string label = std::string(gelu ? "layerNormGelu " : "layerNorm ") + Ty<T>::name + " " +
                            std::to_string(rows) + "x" + std::to_string(C) +
                            (stride != C ? " row stride " + std::to_string(stride) : "");
  const auto x = uniform((size_t)(rows - 1) * stride + C, -3, 5);
  const auto w = uniform(C, 0.5f, 1.5f), b = uniform(C, -0.2f, 0.2f);
  Buf<float> dx(x.size()), dw(C), db(C);
  Buf<T> y((size_t)rows * C);
  dx.up(x);
  dw.up(w);
  db.up(b);
  Bytes out;
  if (!scheduled(label, [&] {
        y.poison();
        if (gelu)
          layerNormGelu<T>(y.p(), dx.p(), stride, dw.p(), db.p(), rows, C, 1e-5f, nullptr);
        else
          layerNorm<T>(y.p(), dx.p(), stride, dw.p(), db.p(), rows, C, 1e-6f, nullptr);
        return y.bytes();
      }, out))
    return;
  const auto want = gelu ? reference::layerNormGelu(x, stride, rows, C, w, b, 1e-5)
                         : reference::layerNorm(x, stride, rows, C, w, b, 1e-6);
  const auto c = reference::compare(widen(as<T>(out, 0, (size_t)rows * C)), want.out, &want.scale, kAtol, Ty<T>::rtol);
  check(c.ok, label + ": within the tolerance of float64 (" + c.str() + ")");
}

// ---- linear ------------------------------------------------------------------------------

enum class Path { Auto, Simt, Mma, Forced };
const char* pathName(Path p) {
  return p == Path::Auto ? "auto" : p == Path::Simt ? "simt" : p == Path::Mma ? "mma" : "forced";
}
const char* epName(Epilogue e) {
  return e == Epilogue::Bias ? "bias" : e == Epilogue::BiasGelu ? "gelu" : e == Epilogue::BiasResidual ? "residual"
         : e == Epilogue::BiasRelu ? "relu" : "float";
}

// How a GEMM test runs: Path::Forced takes `tiling` and `splits`; any path gets a split-K
// workspace of `workspace` floats (0: none).
struct GemmRun {
  MmaTiling tiling = MmaTiling::k64x64;
  int splits = 1;
  size_t workspace = 0;
  size_t outPad = 0;
};

// `expect`: part of the kernel name that must have run (which tiling); `splits`: the GEMM's
// gridDim.z, and with more than one, the reduce kernel ran after it.
template <class T>
void linearTest(Path path, int M, int K, int N, Epilogue ep, const std::string& expect, GemmRun run = {},
                int splits = 1) {
  const std::string label = std::string("linear ") + Ty<T>::name + " " + pathName(path) +
                            (path == Path::Forced ? std::string(" ") + tileInfo(run.tiling).name + "/" +
                                                        std::to_string(run.splits)
                                                  : "") +
                            " " + std::to_string(M) + "x" + std::to_string(K) + "x" + std::to_string(N) + " " +
                            epName(ep) + (run.outPad ? " (unaligned output)" : "") +
                            (run.workspace ? " (workspace " + std::to_string(run.workspace) + ")" : "");
  const auto xv = rounded<T>(uniform((size_t)M * K, -1, 1));
  const auto Wv = rounded<T>(uniform((size_t)N * K, -0.1f, 0.1f));
  const auto b = uniform(N, -0.5f, 0.5f), res = uniform((size_t)M * N, -1, 1);
  const bool floatOut = ep == Epilogue::BiasResidual || ep == Epilogue::BiasFloat;
  Buf<T> dx(xv.size()), dW(Wv.size());
  Buf<float> db(N), dOutF((size_t)M * N, run.outPad), dws(std::max<size_t>(run.workspace, 1));
  Buf<T> dOutT((size_t)M * N, run.outPad);
  dx.up(xv);
  dW.up(Wv);
  db.up(b);
  void* out = floatOut ? (void*)dOutF.p() : (void*)dOutT.p();
  const GemmWorkspace ws{run.workspace ? dws.p() : nullptr, run.workspace};
  Bytes got;
  if (!scheduled(label, [&] {
        if (ep == Epilogue::BiasResidual) dOutF.up(res);
        else if (floatOut) dOutF.poison();
        else dOutT.poison();
        dws.poison();  // a partial sum never written reads NaN
        if (path == Path::Auto) linear<T>(out, dx.p(), dW.p(), db.p(), M, N, K, ep, nullptr, ws);
        if (path == Path::Simt) linearSimt<T>(out, dx.p(), dW.p(), db.p(), M, N, K, ep, nullptr);
        if constexpr (!std::is_same_v<T, float>) {
          if (path == Path::Mma) linearMma<T>(out, dx.p(), dW.p(), db.p(), M, N, K, ep, nullptr, ws);
          if (path == Path::Forced)
            linearMmaWith<T>(run.tiling, run.splits, out, dx.p(), dW.p(), db.p(), M, N, K, ep, nullptr, ws);
        }
        return floatOut ? dOutF.bytes() : dOutT.bytes();
      }, got))
    return;
  check(ran(expect), label + ": ran " + expect + " (" + ranKernel() + ")");
  if (contains(expect, "linearMmaKernel")) {
    const bool reduced = ran("splitKReduceKernel");
    check(lastRecords.front().grid.z == (unsigned)splits && reduced == (splits > 1),
          label + ": " + std::to_string(splits) + " split(s)" + (splits > 1 ? ", then the reduce" : "") + " (" +
              ranKernel() + ")");
  }
  const reference::Ep rep = ep == Epilogue::Bias ? reference::Ep::Bias
                            : ep == Epilogue::BiasGelu ? reference::Ep::Gelu
                            : ep == Epilogue::BiasResidual ? reference::Ep::Residual
                            : ep == Epilogue::BiasRelu ? reference::Ep::Relu
                                                       : reference::Ep::Float;
  const auto want = reference::linear(widen(xv), M, K, widen(Wv), b, N, rep, res);
  // fp32 outputs are not rounded to T: f32's tolerance, plus the accumulation of 16-bit products.
  const double rtol = floatOut ? std::max(Ty<float>::rtol, Ty<T>::rtol / 8) : Ty<T>::rtol;
  const auto c = floatOut ? reference::compare(as<float>(got, 0, (size_t)M * N), want.out, &want.scale, kAtol, rtol)
                          : reference::compare(widen(as<T>(got, 0, (size_t)M * N)), want.out, &want.scale, kAtol, rtol);
  check(c.ok, label + ": within the tolerance of float64 (" + c.str() + ")");
}

// The wave rule of gemm_tiles.h on the host, with numbers worked out by hand (docs/KERNELS.md).
void gemmPlanTests() {
  const GemmDevice h100;  // 132 SMs, 228 KiB per SM, 227 KiB opt-in, 2048 threads per SM
  check(mmaSlots(MmaTiling::k128x128, h100) == 2 && mmaSlots(MmaTiling::k128x64, h100) == 5 &&
            mmaSlots(MmaTiling::k64x64, h100) == 6,
        "slots per SM: 128x128 two (registers), 128x64 five, 64x64 six");
  GemmDevice small = h100;
  small.sharedPerSm = 100 * 1024;
  check(mmaSlots(MmaTiling::k128x64, small) == 2 && mmaSlots(MmaTiling::k64x64, small) == 4,
        "slots per SM with 100 KiB of shared memory: 128x64 two (37 KiB each), 64x64 four (25 KiB)");
  // DeiT-S proj / fc2 at batch 64: 99 x 3 = 297 tiles of 128x128 on 264 slots are two waves. The
  // full wave is L2 bound (264 · 256 · 111 / 132 = 56832 > 2 · 16384); the second, 33 blocks on 33
  // SMs, is not: one 8-warp block per SM at half rate, 16384 / 0.5 = 32768. Total 89600.
  // 128x64: 594 tiles on 660 slots, one wave, L2 bound: 594 · 192 · 111 / 132 = 95904.
  const GemmPlan big = mmaPlanFor(MmaTiling::k128x128, 1, 64 * 197, 384, h100);
  check(big.tiles == 297 && big.waves == 2 && (long)big.cost == 89600, "128x128 at 12608x384: 297 tiles, two waves");
  const GemmPlan mid = mmaPlanFor(MmaTiling::k128x64, 1, 64 * 197, 384, h100);
  check(mid.tiles == 594 && mid.waves == 1 && (long)mid.cost == 95904, "128x64 at 12608x384: 594 tiles, one wave");
  GemmPlan p = chooseGemmPlan(64 * 197, 384, 384, h100, kMaxSplits);
  check(p.tiling == MmaTiling::k128x128 && p.splits == 1 && p.waves == 2,
        std::string("proj at batch 64 keeps 128x128 in two waves: the L2 traffic of smaller tiles costs more (got ") +
            tileInfo(p.tiling).name + ")");
  p = chooseGemmPlan(64 * 197, 384, 1536, h100, kMaxSplits);
  check(p.tiling == MmaTiling::k128x128 && p.splits == 1, "fc2 at batch 64: 128x128, no split (297 tiles >= 132 SMs)");
  // A grid that just spills over one 128x128 wave: 89 x 3 = 267 tiles, 89600 against 128x64's
  // one wave of 534 tiles, 534 · 192 · 111 / 132 = 86217.
  p = chooseGemmPlan(89 * 128, 384, 384, h100, kMaxSplits);
  check(p.tiling == MmaTiling::k128x64 && p.waves == 1 && std::lround(p.cost) == 86217,
        std::string("11392x384: 128x64 in one wave (got ") + tileInfo(p.tiling).name + ")");
  // fc2 at batch 1: 4 x 6 = 24 tiles of 64x64, K = 1536: four splits of 384 (96 blocks, one per SM).
  p = chooseGemmPlan(197, 384, 1536, h100, kMaxSplits);
  check(p.tiling == MmaTiling::k64x64 && p.splits == 4 && p.tiles == 24, "fc2 at batch 1: 64x64, four splits");
  p = chooseGemmPlan(197, 384, 1536, h100, 1);
  check(p.tiling == MmaTiling::k64x64 && p.splits == 1, "fc2 at batch 1 without a workspace: 64x64, no split");
  // proj at batch 1: K = 384 makes one split of at least 256; 64x64 (24 tiles).
  p = chooseGemmPlan(197, 384, 384, h100, kMaxSplits);
  check(p.tiling == MmaTiling::k64x64 && p.splits == 1, "proj at batch 1: 64x64, K too short to split");
  // qkv at batch 256: 394 x 9 = 3546 tiles, 14 waves of 264: the big tile's reuse wins.
  p = chooseGemmPlan(256 * 197, 1152, 384, h100, kMaxSplits);
  check(p.tiling == MmaTiling::k128x128 && p.waves == 14, "qkv at batch 256: 128x128, 14 waves");
  // A 70 x 72 GEMM: 64x64 spreads 4 tiles over 4 SMs (one 4-warp block each at a quarter rate:
  // 4096 / 0.25 = 16384) where one 128x128 tile alone runs at half rate (32768).
  p = chooseGemmPlan(70, 72, 48, h100, kMaxSplits);
  check(p.tiling == MmaTiling::k64x64 && p.tiles == 4, "a 70x72 GEMM: 64x64");
  // The fc2 workspace: 11 x 3 = 33 tiles of 128x128 at 1408 rows, four splits: 4 · 1408 · 384 floats.
  check(splitKWorkspaceFloats(256 * 197, 384, 1536, h100) == (size_t)4 * 1408 * 384,
        "fc2's split-K workspace at up to 256 images: 4 x 1408 x 384 floats");
  check(splitKWorkspaceFloats(256 * 197, 1152, 384, h100) == 0, "qkv (K = 384) never splits");
  GemmDevice tight = h100;
  tight.sharedPerBlockOptin = 40 * 1024;
  p = chooseGemmPlan(64 * 197, 1152, 384, tight, 1);
  check(p.tiling != MmaTiling::k128x128, "a tiling past the opt-in shared memory (48 KiB > 40 KiB) is never chosen");
}

template <class T>
void linearTests() {
  const Epilogue all[] = {Epilogue::Bias, Epilogue::BiasGelu, Epilogue::BiasResidual, Epilogue::BiasFloat,
                          Epilogue::BiasRelu};
  const std::string simt = "linearSimtKernel";
  for (Epilogue ep : all) {
    linearTest<T>(Path::Simt, 130, 48, 70, ep, simt);  // edge tiles in M and N
    linearTest<T>(Path::Auto, 5, 17, 3, ep, simt);     // K = 17: no tensor-core path for any type
  }
  linearTest<T>(Path::Simt, 1, 48, 144, Epilogue::Bias, simt);
  if constexpr (std::is_same_v<T, float>) {
    linearTest<T>(Path::Auto, 37, 72, 10, Epilogue::BiasGelu, simt);
    linearTest<T>(Path::Auto, 20, 776, 70, Epilogue::Bias, simt, {MmaTiling::k64x64, 1, 4 * 20 * 70});  // fp32: never split
    gemmPlanTests();
  } else {
    const std::string small = std::string("linearMmaKernel<") + (std::is_same_v<T, __half> ? "__half" : "__nv_bfloat16");
    const std::string t64 = small + ", 64, 64, 2, 2>", t128 = small + ", 128, 128, 2, 4>",
                      t12864 = small + ", 128, 64, 2, 2>";
    for (Epilogue ep : all) {
      linearTest<T>(Path::Mma, 70, 48, 72, ep, t64);   // edge tiles, K = 48: a half k-slice
      linearTest<T>(Path::Auto, 33, 24, 15, ep, t64);  // N odd: unpaired stores
      linearTest<T>(Path::Forced, 130, 40, 136, ep, t128, {MmaTiling::k128x128});
      linearTest<T>(Path::Forced, 130, 48, 70, ep, t12864, {MmaTiling::k128x64});  // edge tiles in M and N
      // Split-K: K = 200 is 7 k-slices, as 4 + 3, 3 + 3 + 1, 2 + 2 + 2 + 1.
      for (int s = 2; s <= 4; ++s) linearTest<T>(Path::Forced, 70, 200, 72, ep, t64, {MmaTiling::k64x64, s, 4 * 70 * 72}, s);
      linearTest<T>(Path::Forced, 130, 136, 69, ep, t12864, {MmaTiling::k128x64, 3, 3 * 130 * 69}, 3);  // N odd
      linearTest<T>(Path::Forced, 129, 72, 130, ep, t128, {MmaTiling::k128x128, 2, 2 * 129 * 130}, 2);
    }
    GemmRun unaligned;
    unaligned.outPad = 1;
    linearTest<T>(Path::Mma, 16, 64, 40, Epilogue::Bias, t64, unaligned);          // output 2 bytes off: unpaired
    linearTest<T>(Path::Mma, 16, 64, 40, Epilogue::BiasResidual, t64, unaligned);  // output 4 bytes off
    linearTest<T>(Path::Forced, 129, 32, 130, Epilogue::BiasGelu, t128, {MmaTiling::k128x128});
    // linear() splits by itself: 2 tiles of 64x64 on 132 SMs, K = 776 (25 k-slices): three splits.
    linearTest<T>(Path::Auto, 20, 776, 70, Epilogue::BiasResidual, t64, {MmaTiling::k64x64, 1, 3 * 20 * 70}, 3);
    // ... but not into a workspace too small for them.
    linearTest<T>(Path::Auto, 20, 776, 70, Epilogue::BiasResidual, t64, {MmaTiling::k64x64, 1, 3 * 20 * 70 - 1}, 1);
    // On an emulated GPU of one SM every wave is L2 bound (one SM draws 3x its share at most):
    // the wave rule picks 128x128 for 256 x 256 (4 tiles, two waves of two, cost 113664), 128x64
    // for 257 x 64 (3 tiles in one wave, 63936, where 128x128 makes two waves, 89600).
    setSms(1);
    linearTest<T>(Path::Auto, 256, 40, 256, Epilogue::Bias, t128);
    linearTest<T>(Path::Auto, 257, 40, 64, Epilogue::BiasFloat, t12864);
    setSms(132);
    const std::string noWorkspace = errorOf([] {
      linearMmaWith<T>(MmaTiling::k64x64, 2, nullptr, nullptr, nullptr, nullptr, 16, 16, 512, Epilogue::Bias, nullptr);
    });
    check(contains(noWorkspace, "2 splits of 16 x 16 need a workspace of 512 floats"),
          "forcing splits without a workspace is refused: " + noWorkspace);
  }
}

// ---- attention ---------------------------------------------------------------------------

template <class T>
void attentionTest(Path path, int B, int N, int H, int d, const std::string& expect, unsigned threads = 0) {
  const std::string label = std::string("attention ") + Ty<T>::name + " " + pathName(path) + " B" + std::to_string(B) +
                            " N" + std::to_string(N) + " h" + std::to_string(H) + " d" + std::to_string(d);
  const int C = H * d;
  const auto qkv = rounded<T>(uniform((size_t)B * N * 3 * C, -2, 2));
  Buf<T> dq(qkv.size()), dout((size_t)B * N * C);
  Buf<float> dp((size_t)B * H * N);
  dq.up(qkv);
  auto call = [&](float* probs) {
    if (path == Path::Auto) attention<T>(dout.p(), probs, dq.p(), B, N, H, d, nullptr);
    if (path == Path::Simt) attentionSimt<T>(dout.p(), probs, dq.p(), B, N, H, d, nullptr);
    if constexpr (!std::is_same_v<T, float>)
      if (path == Path::Mma) attentionMma<T>(dout.p(), probs, dq.p(), B, N, H, d, nullptr);
  };
  Bytes withProbs, plain;
  if (!scheduled(label + " with class-token probabilities", [&] {
        dout.poison();
        dp.poison();
        call(dp.p());
        return concat({dout.bytes(), dp.bytes()});
      }, withProbs))
    return;
  check(ran(expect) && (!threads || lastRecords.back().block.x == threads),
        label + ": ran " + expect + (threads ? " with " + std::to_string(threads) + " threads" : "") + " (" +
            ranKernel() + ")");
  if (!scheduled(label + " without", [&] {
        dout.poison();
        call(nullptr);
        return dout.bytes();
      }, plain))
    return;
  const size_t outBytes = (size_t)B * N * C * sizeof(T);
  check(std::memcmp(plain.data(), withProbs.data(), outBytes) == 0, label + ": the same output without probabilities");
  const auto want = reference::attention(widen(qkv), B, N, H, d);
  const auto c = reference::compare(widen(as<T>(withProbs, 0, (size_t)B * N * C)), want.out.out, &want.out.scale, kAtol,
                                    Ty<T>::rtol);
  check(c.ok, label + ": output within the tolerance of float64 (" + c.str() + ")");
  const auto p = reference::compare(as<float>(withProbs, outBytes, (size_t)B * H * N), want.probs, nullptr, 1e-7, 1e-4);
  check(p.ok, label + ": class-token probabilities (every head's softmax row 0) within 1e-7 + 1e-4 relative (" +
                  p.str() + ")");
}

template <class T>
void attentionMmaCountTest(int B, int N, int H, int d);

template <class T>
void attentionTests() {
  const std::string simt = "attentionKernel";
  if constexpr (std::is_same_v<T, float>) {
    for (auto [B, N, H, d] : {std::array<int, 4>{1, 2, 2, 16}, {2, 5, 2, 16}, {1, 70, 3, 24}, {1, 130, 2, 64},
                              {1, 97, 1, 128}, {1, 257, 1, 32}, {1, 48, 2, 80}})
      attentionTest<T>(Path::Auto, B, N, H, d, simt);
  } else {
    const std::string mma = "attentionMmaKernel";
    const std::string m64 = mma + "<" + (std::is_same_v<T, __half> ? "__half" : "__nv_bfloat16") + ", 64";
    const std::string m128 = mma + "<" + (std::is_same_v<T, __half> ? "__half" : "__nv_bfloat16") + ", 128";
    attentionTest<T>(Path::Auto, 1, 2, 2, 16, m64, 128);
    attentionTest<T>(Path::Auto, 2, 5, 2, 16, m64, 128);
    attentionTest<T>(Path::Auto, 1, 130, 2, 64, m64, 128);
    attentionTest<T>(Path::Auto, 1, 197, 1, 64, m64, 128);  // DeiT's N: 84 KiB of shared memory, past the default 48
    attentionTest<T>(Path::Auto, 2, 73, 2, 64, m64, 128);   // a last block of one active warp and 9 keys in the last group
    attentionTest<T>(Path::Auto, 1, 138, 1, 64, m64, 128);  // DeiT-S keep 0.7 after the first reorganisation
    for (int N : {197, 138, 97, 73, 68}) attentionMmaCountTest<T>(2, N, 2, 64);
    attentionTest<T>(Path::Auto, 1, 257, 1, 32, m64, 128);  // 92 KiB
    attentionTest<T>(Path::Auto, 1, 97, 1, 128, m128, 128);
    attentionTest<T>(Path::Auto, 1, 48, 2, 80, m128, 128);  // d = 80: a partial MAXD = 128 instance
    attentionTest<T>(Path::Auto, 1, 70, 3, 24, simt);       // d = 24: no whole k16 steps, the SIMT kernel
    attentionTest<T>(Path::Simt, 1, 130, 2, 64, simt);
    // Fewer warps per block when the score rows do not fit: a device allowing 56 KiB.
    setSms(132, 56 * 1024);
    attentionTest<T>(Path::Mma, 1, 130, 1, 64, m64, 64);
    attentionTest<T>(Path::Mma, 1, 300, 1, 64, m64, 32);
    setSms(132);
  }
}

// No tensor-core work on padding: the launch's mma.sync count is exactly the useful work, one warp
// per 16 query rows (ceil(N/16) per image and head), each running (d/16) k-steps × 2 n8 fragments
// for every group of 16 keys (ceil(M/16)) in QKᵀ and the same again in P·V. Before, every warp of
// every block ran, over keys padded to 64: blocks · warps · 4 · (d/16) · 4·ceil(M/64).
template <class T>
void attentionMmaCountTest(int B, int N, int H, int d) {
  const std::string label = std::string("attention ") + Ty<T>::name + " mma count B" + std::to_string(B) + " N" +
                            std::to_string(N) + " h" + std::to_string(H) + " d" + std::to_string(d);
  const int C = H * d;
  const auto qkv = rounded<T>(uniform((size_t)B * N * 3 * C, -2, 2));
  Buf<T> dq(qkv.size()), dout((size_t)B * N * C);
  Buf<float> dp((size_t)B * H * N);
  dq.up(qkv);
  evit_simt::clearLaunchRecords();
  attentionMma<T>(dout.p(), dp.p(), dq.p(), B, N, H, d, nullptr);
  cudaDeviceSynchronize();
  lastRecords = evit_simt::launchRecords();
  if (!check(lastRecords.size() == 1, label + ": one launch (" + ranKernel() + ")")) return;
  const auto& r = lastRecords[0];
  const uint64_t n16 = (N + 15) / 16, m16 = (N + 15) / 16, ks = d / 16, warps = r.block.x / 32;
  const uint64_t useful = (uint64_t)B * H * n16 * (2 * ks * m16) * 2;
  const uint64_t padded = (uint64_t)r.grid.x * r.grid.y * r.grid.z * warps * (2 * ks * 4 * ((N + 63) / 64)) * 2;
  check(r.mma == useful, label + ": " + std::to_string(r.mma) + " mma.sync = B·h·ceil(N/16)·4·(d/16)·ceil(N/16) = " +
                             std::to_string(useful) + " (padded to whole warps and 64 keys: " + std::to_string(padded) +
                             ", " + std::to_string((double)padded / (double)useful).substr(0, 4) + "x)");
}

// groupAttention: N queries against M keys, q and out a channel slice of wider rows (a head
// group of shunted attention: q at column qOff of rows of ldq), k and v in separate tensors with
// their own strides. Columns of out outside the slice must keep their poison (never written).
struct GroupCase {
  int B, N, M, H, d;
  long ldq, qOff, ldk, ldv, ldo, oOff;
};

template <class T>
void groupAttentionTest(Path path, const GroupCase& g, const std::string& expect) {
  const int B = g.B, N = g.N, M = g.M, H = g.H, d = g.d;
  const std::string label = std::string("groupAttention ") + Ty<T>::name + " " + pathName(path) + " B" +
                            std::to_string(B) + " N" + std::to_string(N) + " M" + std::to_string(M) + " h" +
                            std::to_string(H) + " d" + std::to_string(d) + " ldq" + std::to_string(g.ldq) + "+" +
                            std::to_string(g.qOff) + " ldk" + std::to_string(g.ldk) + " ldv" + std::to_string(g.ldv) +
                            " ldo" + std::to_string(g.ldo) + "+" + std::to_string(g.oOff);
  const size_t C = (size_t)H * d, outN = (size_t)B * N * g.ldo;
  const auto qv = rounded<T>(uniform((size_t)B * N * g.ldq, -2, 2));
  const auto kv = rounded<T>(uniform((size_t)B * M * g.ldk, -2, 2));
  const auto vv = rounded<T>(uniform((size_t)B * M * g.ldv, -2, 2));
  Buf<T> dq(qv.size()), dk(kv.size()), dv(vv.size()), dout(outN);
  Buf<float> dp((size_t)B * H * M);
  dq.up(qv);
  dk.up(kv);
  dv.up(vv);
  auto call = [&](float* probs) {
    T* out = dout.p() + g.oOff;
    const T* q = dq.p() + g.qOff;
    if (path == Path::Auto) groupAttention<T>(out, g.ldo, probs, q, g.ldq, dk.p(), g.ldk, dv.p(), g.ldv, B, N, M, H, d, nullptr);
    if (path == Path::Simt) attentionSimt<T>(out, g.ldo, probs, q, g.ldq, dk.p(), g.ldk, dv.p(), g.ldv, B, N, M, H, d, nullptr);
    if constexpr (!std::is_same_v<T, float>)
      if (path == Path::Mma) attentionMma<T>(out, g.ldo, probs, q, g.ldq, dk.p(), g.ldk, dv.p(), g.ldv, B, N, M, H, d, nullptr);
  };
  Bytes withProbs, plain;
  if (!scheduled(label + " with row-0 probabilities", [&] {
        dout.poison();
        dp.poison();
        call(dp.p());
        return concat({dout.bytes(), dp.bytes()});
      }, withProbs))
    return;
  check(ran(expect), label + ": ran " + expect + " (" + ranKernel() + ")");
  if (!scheduled(label + " without", [&] {
        dout.poison();
        call(nullptr);
        return dout.bytes();
      }, plain))
    return;
  const size_t outBytes = outN * sizeof(T);
  check(std::memcmp(plain.data(), withProbs.data(), outBytes) == 0, label + ": the same output without probabilities");
  // The slice the kernel owns, packed; everything else of out still the poison's bytes.
  const auto all = as<T>(withProbs, 0, outN);
  std::vector<T> slice((size_t)B * N * C);
  bool untouched = true;
  for (size_t r = 0; r < (size_t)B * N; ++r)
    for (long c = 0; c < g.ldo; ++c) {
      const T& e = all[r * g.ldo + c];
      if (c >= g.oOff && c < g.oOff + (long)C) {
        slice[r * C + (c - g.oOff)] = e;
      } else {
        const unsigned char* b = reinterpret_cast<const unsigned char*>(&e);
        for (size_t i = 0; i < sizeof(T); ++i) untouched = untouched && b[i] == 0xFF;
      }
    }
  check(untouched, label + ": nothing written outside the output slice");
  const auto qd = widen(qv);
  const std::vector<double> qs(qd.begin() + g.qOff, qd.end());
  const auto want = reference::groupAttention(qs, g.ldq, widen(kv), g.ldk, widen(vv), g.ldv, B, N, M, H, d);
  const auto c = reference::compare(widen(slice), want.out.out, &want.out.scale, kAtol, Ty<T>::rtol);
  check(c.ok, label + ": output within the tolerance of float64 (" + c.str() + ")");
  const auto p = reference::compare(as<float>(withProbs, outBytes, (size_t)B * H * M), want.probs, nullptr, 1e-7, 1e-4);
  check(p.ok, label + ": row-0 probabilities within 1e-7 + 1e-4 relative (" + p.str() + ")");
}

template <class T>
void groupAttentionTests() {
  const std::string simt = "attentionKernel";
  // Shunted's shapes in small: q and out the second half of C-wide rows, k at the front of a kv
  // tensor, v in its own (the local conv's output); fewer keys than queries, down to one.
  const GroupCase shunted{2, 70, 5, 2, 16, 64, 32, 64, 32, 64, 32};
  const GroupCase oneKey{1, 9, 1, 1, 16, 32, 16, 32, 16, 32, 16};
  const GroupCase manyKeys{1, 17, 200, 2, 32, 128, 64, 128, 72, 128, 0};  // M > N, v rows padded
  const GroupCase plain{2, 33, 33, 3, 16, 96, 0, 96, 96, 48, 0};          // shunted's r = 1: M = N
  const GroupCase d128{1, 20, 3, 1, 128, 256, 128, 128, 128, 128, 0};
  if constexpr (std::is_same_v<T, float>) {
    for (const GroupCase& g : {shunted, oneKey, manyKeys, plain, d128}) groupAttentionTest<T>(Path::Auto, g, simt);
    groupAttentionTest<T>(Path::Auto, {1, 40, 7, 2, 4, 24, 8, 16, 8, 24, 8}, simt);  // d = 4: the tiny fixtures' heads
  } else {
    const std::string mma = std::string("attentionMmaKernel<") + (std::is_same_v<T, __half> ? "__half" : "__nv_bfloat16");
    for (const GroupCase& g : {shunted, oneKey, manyKeys, plain}) groupAttentionTest<T>(Path::Auto, g, mma + ", 64");
    groupAttentionTest<T>(Path::Auto, d128, mma + ", 128");
    groupAttentionTest<T>(Path::Simt, shunted, simt);
    groupAttentionTest<T>(Path::Auto, {1, 40, 7, 2, 4, 24, 8, 16, 8, 24, 8}, simt);  // d = 4: no k16 steps
    groupAttentionTest<T>(Path::Auto, {1, 40, 7, 1, 16, 24, 8, 20, 16, 24, 8}, simt);  // k rows 40 bytes apart: no cp.async
  }
}

// ---- topkGatherFuse ----------------------------------------------------------------------

struct TopkCase {
  int B, N, H, C, k;
  bool fuse;
  enum Probs { Random, Ties, NaNs, Zeros } probs;
  bool originsIn;
  size_t xPad;
};

void topkTest(const TopkCase& tc) {
  const int B = tc.B, N = tc.N, H = tc.H, C = tc.C, k = tc.k, M = N - 1, outN = 1 + k + (tc.fuse ? 1 : 0);
  const char* kinds[] = {"", " with ties", " with NaN scores", " with ±0 scores"};
  const std::string label = "topkGatherFuse B" + std::to_string(B) + " N" + std::to_string(N) + " h" + std::to_string(H) +
                            " C" + std::to_string(C) + " k" + std::to_string(k) + (tc.fuse ? " fused" : "") +
                            kinds[tc.probs] + (tc.originsIn ? " with origins" : "") + (tc.xPad ? " unaligned x" : "");
  const auto x = uniform((size_t)B * N * C, -1, 1);
  std::vector<float> probs = uniform((size_t)B * H * N, 0, 1);
  std::uniform_int_distribution<int> pick(0, 7);
  for (float& p : probs) {
    if (tc.probs == TopkCase::Ties) p = (float)(pick(rng) % 4) / 8;
    if (tc.probs == TopkCase::NaNs && pick(rng) == 0) p = std::nanf("");
    if (tc.probs == TopkCase::Zeros) p = pick(rng) < 3 ? (pick(rng) % 2 ? 0.0f : -0.0f) : p;
  }
  std::vector<int32_t> origins((size_t)B * M);
  for (size_t i = 0; i < origins.size(); ++i) origins[i] = (int32_t)(1000 + i * 7 % 311);
  Buf<float> dx(x.size(), tc.xPad), dp(probs.size()), dy((size_t)B * outN * C);
  Buf<int32_t> din(origins.size()), dout((size_t)B * (outN - 1));
  Buf<int32_t> dorder((size_t)B * M);
  Buf<float> dscores((size_t)B * M);
  dx.up(x);
  dp.up(probs);
  din.up(origins);
  Bytes got;
  if (!scheduled(label, [&] {
        dy.poison();
        dout.poison();
        dorder.poison();
        dscores.poison();
        topkGatherFuse(dy.p(), dout.p(), dorder.p(), dscores.p(), dx.p(), dp.p(), tc.originsIn ? din.p() : nullptr, B, N,
                       H, C, k, tc.fuse, -4, nullptr);
        return concat({dy.bytes(), dout.bytes()});
      }, got))
    return;
  // Two launches: the ranking, one block per image; the gather spread over (8-row tiles of the
  // 1 + k copied rows + 32-channel tiles of the fused row) × images.
  const unsigned tiles = (unsigned)((1 + k + 7) / 8 + (tc.fuse ? (C + 31) / 32 : 0));
  check(lastRecords.size() == 2 && contains(lastRecords[0].kernel, "topkRankKernel") &&
            lastRecords[0].grid.x == (unsigned)B && contains(lastRecords[1].kernel, "gatherFuseKernel") &&
            lastRecords[1].grid.x == tiles && lastRecords[1].grid.y == (unsigned)B && lastRecords[1].block.x == 256,
        label + ": ranked per image, gathered over " + std::to_string(tiles) + " tiles × " + std::to_string(B) +
            " images (" + ranKernel() + ")");
  const auto y = as<float>(got, 0, (size_t)B * outN * C);
  const auto o = as<int32_t>(got, (size_t)B * outN * C * 4, (size_t)B * (outN - 1));
  bool order = true, copies = true;
  std::vector<double> fused, want, scale;
  for (int b = 0; b < B; ++b) {
    // The kernel's scores: fp32 sum over heads in head order, then the mean (device_math.h's headMean).
    std::vector<float> s(M);
    for (int j = 0; j < M; ++j) {
      float acc = 0.0f;
      for (int h = 0; h < H; ++h) acc += probs[((size_t)b * H + h) * N + 1 + j];
      s[j] = acc / (float)H;
    }
    const auto idx = reference::topk(s.data(), M, k);
    std::vector<bool> kept(M, false);
    for (int i = 0; i < k; ++i) {
      kept[idx[i]] = true;
      order = order && o[(size_t)b * (outN - 1) + i] == (tc.originsIn ? origins[(size_t)b * M + idx[i]] : idx[i]);
    }
    if (tc.fuse) order = order && o[(size_t)b * (outN - 1) + k] == -4;
    for (int r = 0; r <= k; ++r) {
      const int src = r == 0 ? 0 : 1 + idx[r - 1];
      copies = copies && std::memcmp(&y[((size_t)b * outN + r) * C], &x[((size_t)b * N + src) * C], C * 4) == 0;
    }
    if (tc.fuse)
      for (int c = 0; c < C; ++c) {
        double acc = 0, abs = 0;
        for (int j = 0; j < M; ++j)
          if (!kept[j]) {
            acc += (double)s[j] * x[((size_t)b * N + 1 + j) * C + c];
            abs += std::fabs((double)s[j] * x[((size_t)b * N + 1 + j) * C + c]);
          }
        fused.push_back(y[((size_t)b * outN + 1 + k) * C + c]);
        want.push_back(acc);
        scale.push_back(abs);
      }
  }
  check(order, label + ": kept tokens and their origins, by score, ties to the lower index, NaN last");
  check(copies, label + ": class and kept tokens copied bit for bit");
  if (tc.fuse) {
    bool nanAlike = true;
    for (size_t i = 0; i < want.size(); ++i)
      if (std::isnan(want[i])) nanAlike = nanAlike && std::isnan(fused[i]), want[i] = fused[i] = 0;
    const auto c = reference::compare(fused, want, &scale, 1e-6, 1e-5);
    check(c.ok && nanAlike, label + ": the fused token within 1e-6 + 1e-5 · Σ|terms| of float64 (" + c.str() + ")");
  }
}

// ---- patch embedding ---------------------------------------------------------------------

// uint8 pixels through the normalisation table: cols[r, k] = lut[c, pixel], bit for bit, for
// every level (0 and 255 included) of every channel.
template <class T>
void pixelPatchTest(int B, int ic, int gh, int gw, int p) {
  const std::string label = std::string("patchifyPixels ") + Ty<T>::name + " B" + std::to_string(B) + " " +
                            std::to_string(ic) + "x" + std::to_string(gh * p) + "x" + std::to_string(gw * p) + " p" +
                            std::to_string(p);
  const int P = gh * gw, K = ic * p * p, H = gh * p, W = gw * p;
  std::mt19937 rng(11 + B * 7 + ic);
  std::vector<uint8_t> px((size_t)B * ic * H * W);
  for (size_t i = 0; i < px.size(); ++i) px[i] = i < 256 ? (uint8_t)i : (uint8_t)(rng() & 255);
  const float mean[3] = {0.485f, 0.456f, 0.406f}, stdev[3] = {0.229f, 0.224f, 0.225f};
  const std::vector<float> lut = evit::pixelLut(mean, stdev, ic);
  Buf<uint8_t> dp(px.size());
  Buf<float> dl(lut.size());
  Buf<T> dc((size_t)B * P * K);
  dp.up(px);
  dl.up(lut);
  Bytes got;
  if (!scheduled(label, [&] {
        dc.poison();
        patchifyPixels<T>(dc.p(), dp.p(), dl.p(), B, ic, gh, gw, p, nullptr);
        return dc.bytes();
      }, got))
    return;
  const auto cols = as<T>(got, 0, (size_t)B * P * K);
  bool ok = true;
  for (int b = 0; b < B; ++b)
    for (int gy = 0; gy < gh; ++gy)
      for (int gx = 0; gx < gw; ++gx)
        for (int c = 0; c < ic; ++c)
          for (int ky = 0; ky < p; ++ky)
            for (int kx = 0; kx < p; ++kx) {
              const uint8_t v = px[(((size_t)b * ic + c) * H + gy * p + ky) * W + gx * p + kx];
              const T want = Ty<T>::to(lut[(size_t)c * 256 + v]);
              const T have = cols[((size_t)b * P + gy * gw + gx) * K + (c * p + ky) * p + kx];
              ok = ok && std::memcmp(&want, &have, sizeof(T)) == 0;
            }
  check(ok, label + ": every element is lut[c, pixel], in the conv weight's (c, ky, kx) order");
}

template <class T>
void patchTest(int B, int ic, int gh, int gw, int p, int C) {
  const std::string label = std::string("patchify ") + Ty<T>::name + " B" + std::to_string(B) + " " + std::to_string(ic) +
                            "x" + std::to_string(gh * p) + "x" + std::to_string(gw * p) + " p" + std::to_string(p);
  const int P = gh * gw, K = ic * p * p, H = gh * p, W = gw * p;
  const auto img = uniform((size_t)B * ic * H * W, -2, 2);
  Buf<float> di(img.size());
  Buf<T> dc((size_t)B * P * K);
  di.up(img);
  Bytes got;
  if (scheduled(label, [&] {
        dc.poison();
        patchify<T>(dc.p(), di.p(), B, ic, gh, gw, p, nullptr);
        return dc.bytes();
      }, got)) {
    const auto cols = as<T>(got, 0, (size_t)B * P * K);
    bool ok = true;
    for (int b = 0; b < B; ++b)
      for (int gy = 0; gy < gh; ++gy)
        for (int gx = 0; gx < gw; ++gx)
          for (int c = 0; c < ic; ++c)
            for (int ky = 0; ky < p; ++ky)
              for (int kx = 0; kx < p; ++kx) {
                const T want = Ty<T>::to(img[(((size_t)b * ic + c) * H + gy * p + ky) * W + gx * p + kx]);
                const T have = cols[((size_t)b * P + gy * gw + gx) * K + (c * p + ky) * p + kx];
                ok = ok && std::memcmp(&want, &have, sizeof(T)) == 0;
              }
    check(ok, label + ": every patch element in the conv weight's (c, ky, kx) order");
  }
  if (!std::is_same_v<T, float>) return;
  const std::string alabel = "assembleTokens B" + std::to_string(B) + " P" + std::to_string(P) + " C" + std::to_string(C);
  const auto patches = uniform((size_t)B * P * C, -1, 1), cls = uniform(C, -1, 1), pos = uniform((size_t)(P + 1) * C, -1, 1);
  Buf<float> dpatch(patches.size()), dcls(C), dpos(pos.size()), dx((size_t)B * (P + 1) * C);
  dpatch.up(patches);
  dcls.up(cls);
  dpos.up(pos);
  if (!scheduled(alabel, [&] {
        dx.poison();
        assembleTokens(dx.p(), dpatch.p(), dcls.p(), dpos.p(), B, P, C, nullptr);
        return dx.bytes();
      }, got))
    return;
  const auto x = as<float>(got, 0, (size_t)B * (P + 1) * C);
  bool ok = true;
  for (int b = 0; b < B; ++b)
    for (int t = 0; t <= P; ++t)
      for (int c = 0; c < C; ++c) {
        const float v = (t == 0 ? cls[c] : patches[((size_t)b * P + t - 1) * C + c]) + pos[(size_t)t * C + c];
        ok = ok && std::memcmp(&v, &x[((size_t)b * (P + 1) + t) * C + c], 4) == 0;
      }
  check(ok, alabel + ": [cls + pos[0], patches + pos[1..]] exactly");
}

// ---- convolution, depthwise convolution, token mean -----------------------------------------

template <class T>
const char* inName() {
  return std::is_same_v<T, float> ? "f32" : std::is_same_v<T, __half> ? "f16" : "bf16";
}

struct ConvCase {
  bool nchw;
  int B, H, W, Cin, Cout, k, stride, pad;
  Epilogue ep;
};

// In: the input's element type (float: the image or the residual stream; T: a T activation).
template <class T, class In>
void convTest(const ConvCase& cc) {
  const int Ho = (cc.H + 2 * cc.pad - cc.k) / cc.stride + 1, Wo = (cc.W + 2 * cc.pad - cc.k) / cc.stride + 1;
  const int Kp = convDepth(cc.Cin, cc.k);
  const std::string label = std::string("conv2d ") + Ty<T>::name + " from " + inName<In>() + (cc.nchw ? " nchw" : " nhwc") +
                            " B" + std::to_string(cc.B) + " " + std::to_string(cc.H) + "x" + std::to_string(cc.W) + "x" +
                            std::to_string(cc.Cin) + " -> " + std::to_string(Ho) + "x" + std::to_string(Wo) + "x" +
                            std::to_string(cc.Cout) + " k" + std::to_string(cc.k) + " s" + std::to_string(cc.stride) +
                            " p" + std::to_string(cc.pad) + " " + epName(cc.ep);
  const size_t rows = (size_t)cc.B * Ho * Wo, outN = rows * cc.Cout;
  // The kernel sees x rounded to T either way (im2col rounds a float input): so does the reference.
  const auto xf = uniform((size_t)cc.B * cc.H * cc.W * cc.Cin, -2, 2);
  const auto xT = rounded<T>(xf);
  std::vector<In> xIn(xf.size());
  for (size_t i = 0; i < xf.size(); ++i) {
    if constexpr (std::is_same_v<In, float>) xIn[i] = (float)Ty<T>::back(xT[i]);
    else xIn[i] = xT[i];
  }
  const auto Wf = uniform((size_t)cc.Cout * cc.Cin * cc.k * cc.k, -0.3f, 0.3f);
  const auto Wr = rounded<T>(Wf);
  std::vector<float> Wround(Wf.size()), Wp((size_t)cc.Cout * Kp);
  for (size_t i = 0; i < Wf.size(); ++i) Wround[i] = (float)Ty<T>::back(Wr[i]);
  convWeightForGemm(Wp.data(), Wround.data(), cc.Cout, cc.Cin, cc.k);
  const auto b = uniform(cc.Cout, -0.5f, 0.5f);
  const bool floatOut = cc.ep == Epilogue::BiasFloat;
  Buf<In> dx(xIn.size());
  Buf<T> dW(Wp.size()), dcols(rows * Kp), dOutT(outN);
  Buf<float> db(cc.Cout), dOutF(outN);
  dx.up(xIn);
  dW.up(rounded<T>(Wp));
  db.up(b);
  Bytes got;
  if (!scheduled(label, [&] {
        dOutT.poison();
        dOutF.poison();
        dcols.poison();
        conv2d<T, In>(floatOut ? (void*)dOutF.p() : (void*)dOutT.p(), dcols.p(), dx.p(),
                      cc.nchw ? ImageLayout::NCHW : ImageLayout::NHWC, dW.p(), db.p(), cc.B, cc.H, cc.W, cc.Cin, cc.Cout,
                      cc.k, cc.stride, cc.pad, cc.ep, nullptr);
        return floatOut ? dOutF.bytes() : dOutT.bytes();
      }, got))
    return;
  const bool direct = std::is_same_v<In, T> && cc.k == 1 && cc.stride == 1 && cc.pad == 0 && Kp == cc.Cin && !cc.nchw;
  const std::string gemm = std::is_same_v<T, float> ? "linearSimtKernel" : "linearMmaKernel";
  check(ran(gemm) && ran("im2colKernel") == !direct,
        label + ": ran " + (direct ? "the GEMM alone" : "im2col and the " + gemm) + " (" + ranKernel() + ")");
  const auto want = reference::conv2d(widen(xT), cc.nchw, widen(Wr), b, cc.B, cc.H, cc.W, cc.Cin, cc.Cout, cc.k, cc.stride,
                                      cc.pad, cc.ep == Epilogue::BiasRelu);
  const double rtol = floatOut ? std::max(Ty<float>::rtol, Ty<T>::rtol / 8) : Ty<T>::rtol;
  const auto c = floatOut ? reference::compare(as<float>(got, 0, outN), want.out, &want.scale, kAtol, rtol)
                          : reference::compare(widen(as<T>(got, 0, outN)), want.out, &want.scale, kAtol, rtol);
  check(c.ok, label + ": within the tolerance of float64 (" + c.str() + ")");
}

template <class T>
void convTests() {
  // The model's convolutions in small, then a 1×1 (the GEMM alone when Cin is whole chunks),
  // a 1×1 image (only the centre tap inside) and a grid the strided kernel does not divide.
  const ConvCase stem0{true, 2, 19, 20, 3, 16, 7, 2, 3, Epilogue::BiasRelu};
  const ConvCase stem3{false, 2, 10, 9, 16, 16, 3, 1, 1, Epilogue::BiasRelu};
  const ConvCase stem2{false, 1, 11, 10, 16, 24, 2, 2, 0, Epilogue::BiasFloat};
  const ConvCase patch{false, 2, 7, 8, 12, 20, 3, 2, 1, Epilogue::BiasFloat};
  const ConvCase sr8{false, 1, 16, 8, 8, 8, 8, 8, 0, Epilogue::BiasFloat};
  const ConvCase sr1{false, 2, 6, 5, 40, 33, 1, 1, 0, Epilogue::BiasFloat};
  const ConvCase odd1x1{false, 1, 4, 3, 29, 10, 1, 1, 0, Epilogue::Bias};
  const ConvCase tiny{false, 3, 1, 1, 5, 7, 3, 1, 1, Epilogue::Bias};
  const ConvCase nchwTiny{true, 1, 5, 6, 2, 3, 3, 1, 1, Epilogue::BiasFloat};
  convTest<T, float>(stem0);
  convTest<T, float>(nchwTiny);
  convTest<T, float>(patch);  // the residual stream read as an image
  for (const ConvCase& cc : {stem3, stem2, sr8, sr1, odd1x1, tiny}) convTest<T, T>(cc);
}

struct DwCase {
  const char* what;
  int B, H, W, C;
  long ldx, xOff;
  enum Add { None, SameAsX, InPlace } add;
  bool gelu;
};

template <class T>
void depthwiseTest(const DwCase& dc) {
  const std::string label = std::string("depthwise3x3 ") + Ty<T>::name + " " + dc.what + " B" + std::to_string(dc.B) + " " +
                            std::to_string(dc.H) + "x" + std::to_string(dc.W) + "x" + std::to_string(dc.C);
  const size_t P = (size_t)dc.B * dc.H * dc.W, outN = P * dc.C;
  const auto xv = rounded<T>(uniform(dc.xOff + (P - 1) * dc.ldx + dc.C, -2, 2));
  const auto addv = rounded<T>(uniform(outN, -2, 2));
  const auto Wf = uniform((size_t)dc.C * 9, -0.5f, 0.5f), b = uniform(dc.C, -0.5f, 0.5f);
  std::vector<float> Wt((size_t)9 * dc.C);
  depthwiseWeightToTaps(Wt.data(), Wf.data(), dc.C);
  Buf<T> dx(xv.size()), dout(outN);
  Buf<float> dW(Wt.size()), db(dc.C);
  dx.up(xv);
  dW.up(Wt);
  db.up(b);
  Bytes got;
  if (!scheduled(label, [&] {
        const T* x = dx.p() + dc.xOff;
        if (dc.add == DwCase::InPlace) {
          dout.up(addv);  // o += lc(v): written over the add
          depthwise3x3<T>(dout.p(), x, dc.ldx, dout.p(), dc.C, dW.p(), db.p(), dc.B, dc.H, dc.W, dc.C, dc.gelu, nullptr);
        } else {
          dout.poison();
          depthwise3x3<T>(dout.p(), x, dc.ldx, dc.add == DwCase::SameAsX ? x : nullptr, dc.ldx, dW.p(), db.p(), dc.B,
                          dc.H, dc.W, dc.C, dc.gelu, nullptr);
        }
        return dout.bytes();
      }, got))
    return;
  const auto xd = widen(xv), ad = widen(addv);
  const auto want = dc.add == DwCase::InPlace
                        ? reference::depthwise3x3(xd, dc.xOff, dc.ldx, &ad, 0, dc.C, widen(rounded<float>(Wf)), b, dc.B,
                                                  dc.H, dc.W, dc.C, dc.gelu)
                        : reference::depthwise3x3(xd, dc.xOff, dc.ldx, dc.add == DwCase::SameAsX ? &xd : nullptr,
                                                  dc.xOff, dc.ldx, widen(rounded<float>(Wf)), b, dc.B, dc.H, dc.W, dc.C,
                                                  dc.gelu);
  const auto c = reference::compare(widen(as<T>(got, 0, outN)), want.out, &want.scale, kAtol, Ty<T>::rtol);
  check(c.ok, label + ": within the tolerance of float64 (" + c.str() + ")");
}

template <class T>
void depthwiseTests() {
  depthwiseTest<T>({"MLP gelu(u + dw(u))", 2, 5, 7, 48, 48, 0, DwCase::SameAsX, true});
  depthwiseTest<T>({"v + lc(v) on the v half of kv", 2, 4, 3, 20, 40, 20, DwCase::SameAsX, false});
  depthwiseTest<T>({"o += lc(v) in place, v in [k | v]", 1, 7, 7, 24, 48, 24, DwCase::InPlace, false});
  depthwiseTest<T>({"no add", 1, 6, 4, 13, 13, 0, DwCase::None, false});
  depthwiseTest<T>({"1x1 grid", 3, 1, 1, 9, 9, 0, DwCase::SameAsX, true});
  depthwiseTest<T>({"one row", 2, 1, 5, 17, 17, 0, DwCase::InPlace, false});
}

template <class T>
void meanTest(int B, int N, int C) {
  const std::string label = std::string("meanTokens ") + Ty<T>::name + " B" + std::to_string(B) + " N" +
                            std::to_string(N) + " C" + std::to_string(C);
  const auto x = uniform((size_t)B * N * C, -3, 3);
  Buf<float> dx(x.size());
  Buf<T> dout((size_t)B * C);
  dx.up(x);
  Bytes got;
  if (!scheduled(label, [&] {
        dout.poison();
        meanTokens<T>(dout.p(), dx.p(), B, N, C, nullptr);
        return dout.bytes();
      }, got))
    return;
  const auto want = reference::meanTokens(x, B, N, C);
  const auto c = reference::compare(widen(as<T>(got, 0, (size_t)B * C)), want.out, &want.scale, kAtol, Ty<T>::rtol);
  check(c.ok, label + ": within the tolerance of float64 (" + c.str() + ")");
}

template <class T>
void allFor() {
  if (wanted("convert")) convertTest<T>();
  if (wanted("layerNorm")) {
    layerNormTest<T>(1, 48, 48);
    layerNormTest<T>(7, 130, 130);
    layerNormTest<T>(9, 33, 5 * 33);  // the head's class-token rows: one row per image of 5 tokens
    layerNormTest<T>(3, 200, 200);
    layerNormTest<T>(7, 130, 130, true);
    layerNormTest<T>(5, 24, 40, true);
  }
  if (wanted("linear")) linearTests<T>();
  if (wanted("attention")) {
    attentionTests<T>();
    groupAttentionTests<T>();
  }
  if (wanted("patch")) {
    patchTest<T>(2, 3, 3, 2, 4, 24);
    patchTest<T>(1, 1, 2, 5, 3, 13);
    pixelPatchTest<T>(2, 3, 3, 2, 4);
    pixelPatchTest<T>(1, 1, 2, 5, 3);
    pixelPatchTest<T>(3, 3, 4, 4, 5);
  }
  if (wanted("conv")) convTests<T>();
  if (wanted("depthwise")) depthwiseTests<T>();
  if (wanted("mean")) {
    meanTest<T>(3, 49, 40);
    meanTest<T>(1, 1, 7);
    meanTest<T>(2, 4, 130);
  }
}

}  // namespace

int main(int argc, char** argv) {
  // One type per run keeps each process short: "f32", "f16", "bf16" or "topk" (default all),
  // optionally one op of it.
  const std::string only = argc > 1 ? argv[1] : "";
  opFilter = argc > 2 ? argv[2] : "";
  return harness::main([&] {
    if (only.empty() || only == "f32") allFor<float>();
    if (only.empty() || only == "f16") allFor<__half>();
    if (only.empty() || only == "bf16") allFor<__nv_bfloat16>();
    if (only.empty() || only == "topk") {
      topkTest({2, 40, 3, 12, 20, true, TopkCase::Random, false, 0});
      topkTest({1, 5, 2, 8, 1, true, TopkCase::Random, true, 0});
      topkTest({3, 70, 2, 16, 35, false, TopkCase::Ties, true, 0});
      topkTest({4, 33, 3, 16, 16, true, TopkCase::Ties, false, 0});
      topkTest({2, 40, 2, 13, 30, true, TopkCase::NaNs, false, 0});  // C = 13: the scalar copy
      topkTest({2, 40, 2, 16, 10, false, TopkCase::Zeros, false, 1});  // x 4 bytes off: the scalar copy
      topkTest({1, 257, 1, 8, 100, true, TopkCase::Random, true, 0});  // 256 keys: the whole bitonic network
      topkTest({1, 2, 1, 4, 1, true, TopkCase::Random, false, 0});
      topkTest({3, 40, 2, 37, 39, true, TopkCase::Random, true, 0});   // k = N - 1: nothing dropped, fused = 0
      topkTest({2, 40, 2, 70, 1, true, TopkCase::Ties, false, 0});     // k = 1: 38 dropped, C = 70 over three tiles
      topkTest({1, 197, 6, 96, 137, true, TopkCase::Random, true, 0});  // DeiT's first dropping block, batch 1
      topkTest({5, 29, 2, 10, 7, true, TopkCase::NaNs, true, 2});     // several images, C = 10, unaligned x
    }
  });
}
