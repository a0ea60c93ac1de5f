// The CUDA backend (cuda/cuda_model.cu, the arena, weights and context code, and the real
// kernels) on the SIMT emulator (test/simt): the CUDA runtime is emulated and every kernel
// runs on CPU fibers. Checks against the CPU backend: every plan shape, chunked batches, the
// graph cache, the profile, concurrent passes, f16 and bf16 within docs/CUDA.md's tolerances,
// the launches a pass makes, and the error paths (failed launch, failed capture, sticky
// error), then that every allocation was freed. Prints one "ok"/"not ok" line per check.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "../../cuda/cuda_model.h"
#include "../../src/backend/pixels.h"
#include "../../src/cpu/cpu_model.h"
#include "evit_simt/control.h"

using namespace evit;

namespace {

int failures = 0, checks = 0;
void check(bool ok, const std::string& what) {
  ++checks;
  if (!ok) ++failures;
  std::printf("%s %d - %s\n", ok ? "ok" : "not ok", checks, what.c_str());
}

ModelConfig smallConfig() {
  ModelConfig c;
  c.embedDim = 48;
  c.depth = 6;
  c.numHeads = 3;
  c.patchSize = 4;
  c.inChans = 3;
  c.gridH = 6;
  c.gridW = 5;
  c.numClasses = 7;
  c.mlpHidden = 96;
  return c;
}

std::shared_ptr<HostWeights> randomWeights(const ModelConfig& c, unsigned seed) {
  std::mt19937 rng(seed);
  std::map<std::string, std::vector<float>> store;
  for (const TensorSpec& s : tensorSpecs(c)) {
    const bool norm = s.name.find("norm") != std::string::npos && s.name.find("weight") != std::string::npos;
    std::normal_distribution<float> d(norm ? 1.0f : 0.0f, norm ? 0.1f : 0.2f);
    auto& v = store[s.name];
    v.resize(s.numel);
    for (float& x : v) x = d(rng);
  }
  return std::make_shared<HostWeights>(c, [&](const std::string& n) -> HostTensor {
    auto it = store.find(n);
    return it == store.end() ? HostTensor{nullptr, 0} : HostTensor{it->second.data(), it->second.size()};
  });
}

std::vector<float> randomImages(const ModelConfig& c, int B, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(-2, 2);
  std::vector<float> v((size_t)B * c.inChans * c.imgH() * c.imgW());
  for (float& x : v) x = d(rng);
  return v;
}

std::vector<BlockPlan> plan(const ModelConfig& c, std::map<int, BlockPlan> drops) {
  std::vector<BlockPlan> p(c.depth);
  for (auto& [i, bp] : drops) p[i] = bp;
  return p;
}

ForwardResult run(PreparedModel& m, const std::vector<float>& images, int B, const std::vector<BlockPlan>& p,
                  bool profile = false) {
  ForwardRequest req;
  req.images = images.data();
  req.batch = B;
  req.plan = p;
  req.tokens = validatePlan(m.config(), p);
  req.profile = profile;
  ForwardResult out;
  m.forward(req, out);
  return out;
}

// uint8 images, every level present, and the table that normalises them.
std::vector<uint8_t> randomPixels(const ModelConfig& c, int B, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v((size_t)B * c.inChans * c.imgH() * c.imgW());
  for (size_t i = 0; i < v.size(); ++i) v[i] = i < 256 ? (uint8_t)i : (uint8_t)(rng() & 255);
  return v;
}
const float kMean[3] = {0.485f, 0.456f, 0.406f}, kStd[3] = {0.229f, 0.224f, 0.225f};

ForwardResult runPixels(PreparedModel& m, const std::vector<uint8_t>& px, const std::vector<float>& lut, int B,
                        const std::vector<BlockPlan>& p) {
  ForwardRequest req;
  req.pixels = px.data();
  req.pixelLut = lut.data();
  req.batch = B;
  req.plan = p;
  req.tokens = validatePlan(m.config(), p);
  ForwardResult out;
  m.forward(req, out);
  return out;
}

double maxDiff(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return INFINITY;
  double d = 0;
  for (size_t i = 0; i < a.size(); ++i) d = std::max(d, (double)std::fabs(a[i] - b[i]));
  return d;
}

bool sameKept(const ForwardResult& a, const ForwardResult& b) {
  if (a.kept.size() != b.kept.size()) return false;
  for (size_t i = 0; i < a.kept.size(); ++i)
    if (a.kept[i].block != b.kept[i].block || a.kept[i].perImage != b.kept[i].perImage ||
        a.kept[i].origins != b.kept[i].origins)
      return false;
  return true;
}

CudaOptions f32(int maxBatch, int streams) {
  CudaOptions o;
  o.precision = Precision::F32;
  o.maxBatch = maxBatch;
  o.streams = streams;
  return o;
}

template <class F>
std::string errorOf(F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

}  // namespace

int runChecks();

int main() {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // every line out before a crash
  try {
    return runChecks();
  } catch (const std::exception& e) {
    std::printf("not ok %d - unexpected exception: %s\n", ++checks, e.what());
    return 1;
  }
}

namespace {

// Logits tolerances of docs/CUDA.md (test/gpu/compare.js), stated for logits within ±7; this
// random model's logits span `range`, so they scale with it.
double logitTolerance(Precision p, double range) {
  const double base = p == Precision::F32 ? 1e-3 : p == Precision::F16 ? 3e-2 : 1.5e-1;
  return base * std::max(1.0, range / 7.0);
}

double maxAbs(const std::vector<float>& v) {
  double m = 0;
  for (float x : v) m = std::max(m, (double)std::fabs(x));
  return m;
}

// 16-bit kept tokens: the same sets, except near-ties at the k-th place (docs/CUDA.md): at most
// two tokens per image and block differ, each among the last three kept places of its list.
// A token one backend dropped earlier cannot be kept by it later; such inherited differences are
// not counted again.
bool keptAlike(const ForwardResult& a, const ForwardResult& b, int batch, std::string& why) {
  if (a.kept.size() != b.kept.size()) return why = "different reorganising blocks", false;
  for (int img = 0; img < batch; ++img) {
    std::vector<int32_t> prevA, prevB;
    for (size_t j = 0; j < a.kept.size(); ++j) {
      const int n = a.kept[j].perImage;
      if (b.kept[j].perImage != n) return why = "different kept counts", false;
      std::vector<int32_t> ka(a.kept[j].origins.begin() + (size_t)img * n, a.kept[j].origins.begin() + (size_t)(img + 1) * n);
      std::vector<int32_t> kb(b.kept[j].origins.begin() + (size_t)img * n, b.kept[j].origins.begin() + (size_t)(img + 1) * n);
      const int k = ka.back() == -1 - a.kept[j].block ? n - 1 : n;  // a fused token comes last
      auto has = [](const std::vector<int32_t>& v, int32_t x) { return std::find(v.begin(), v.end(), x) != v.end(); };
      int only = 0;
      for (int pass = 0; pass < 2; ++pass) {
        const auto& mine = pass ? kb : ka;
        const auto& other = pass ? ka : kb;
        const auto& otherPrev = pass ? prevA : prevB;
        for (int i = 0; i < k; ++i) {
          if (has(other, mine[i]) || (!otherPrev.empty() && !has(otherPrev, mine[i]))) continue;
          ++only;
          if (i < k - 3) return why = "token " + std::to_string(mine[i]) + " differs at place " + std::to_string(i), false;
        }
      }
      if (only > 4) return why = std::to_string(only) + " tokens differ", false;
      prevA = ka;
      prevB = kb;
    }
  }
  return true;
}

}  // namespace

int runChecks() {
  const ModelConfig c = smallConfig();
  auto weights = randomWeights(c, 7);
  cpu::CpuModel cpuModel(c, weights);
  const int P = c.numPatches();
  const std::vector<std::pair<std::string, std::vector<BlockPlan>>> plans = {
      {"dense", plan(c, {})},
      {"keep at 1 and 3, fused", plan(c, {{1, {20, true}}, {3, {9, true}}})},
      {"keep at 0, 1, 2, not fused", plan(c, {{0, {P - 2, false}}, {1, {11, false}}, {2, {1, false}}})},
      {"keep at 5 only, fused", plan(c, {{5, {3, true}}})},
  };
  const CudaReport probe = probeCuda();
  check(probe.available && probe.devices.size() == 1 && probe.devices[0].name == "evit SIMT emulator (sm_90)" &&
            probe.devices[0].major == 9,
        "the probe finds the emulated sm_90 device: " + (probe.available ? probe.devices[0].name : probe.reason));
  const double range = maxAbs(run(cpuModel, randomImages(c, 9, 109), 9, plans[0].second).logits);
  const double f32Tol = logitTolerance(Precision::F32, range);

  {
    cuda::CudaModel gpu(c, *weights, f32(4, 2));
    const auto before = evit_simt::counters();
    for (const auto& [name, p] : plans)
      for (int B : {1, 3, 4, 9}) {
        const auto images = randomImages(c, B, 100 + B);
        const ForwardResult want = run(cpuModel, images, B, p);
        for (int pass = 0; pass < 3; ++pass) {  // eager, capture, replay
          const ForwardResult got = run(gpu, images, B, p);
          const std::string what = name + ", batch " + std::to_string(B) + ", pass " + std::to_string(pass + 1);
          const double d = maxDiff(got.logits, want.logits);
          check(d <= f32Tol, what + ": logits match the CPU backend within " + std::to_string(f32Tol) + " (max diff " +
                                 std::to_string(d) + ")");
          check(sameKept(got, want), what + ": kept origins identical");
        }
      }
    const auto after = evit_simt::counters();
    check(after.capturesCompleted > before.capturesCompleted && after.graphLaunches > before.graphLaunches,
          "repeated shapes were captured (" + std::to_string(after.capturesCompleted - before.capturesCompleted) +
              ") and replayed (" + std::to_string(after.graphLaunches - before.graphLaunches) + " graph launches)");

    // What one pass launches: patch embedding (3), 7 kernels per block, a reorganisation (the
    // ranking and the gather) per dropping block, the head (2); eagerly, then from a captured graph.
    const auto one = randomImages(c, 1, 3);
    const auto& p2 = plans[1].second;
    const size_t launches = 3 + 7 * (size_t)c.depth + 2 + 2 * 2;
    std::vector<size_t> perPass;
    bool fromGraph = true;
    for (int pass = 0; pass < 3; ++pass) {
      evit_simt::clearLaunchRecords();
      run(gpu, one, 1, p2);
      const auto recs = evit_simt::launchRecords();
      perPass.push_back(recs.size());
      if (pass == 2)
        for (const auto& r : recs) fromGraph = fromGraph && r.fromGraph;
    }
    check(perPass == std::vector<size_t>{launches, launches, launches} && fromGraph,
          "a pass with two reorganising blocks runs " + std::to_string(launches) +
              " kernels, eagerly and from its graph (got " + std::to_string(perPass[0]) + ", " +
              std::to_string(perPass[1]) + ", " + std::to_string(perPass[2]) + ")");

    const auto images = randomImages(c, 3, 5);
    const auto& p = plans[1].second;
    const ForwardResult prof = run(gpu, images, 3, p, true);
    check(prof.profile.size() == profileSize(c.depth), "profile has a slot per op");
    bool reorgOnlyOnDrops = true;
    for (int i = 0; i < c.depth; ++i) {
      const double r = prof.profile[profileSlot(i, kReorganise)];
      if ((p[i].keep < 0) != (r == 0.0) && p[i].keep < 0) reorgOnlyOnDrops = false;
    }
    check(reorgOnlyOnDrops, "reorganise time only on dropping blocks");
    check(maxDiff(prof.logits, run(cpuModel, images, 3, p).logits) <= f32Tol, "profiled pass gives the same logits");

    // The thread order inside blocks does not change a single bit of the result.
    std::vector<ForwardResult> orders;
    for (const char* s : {"forward", "reverse", "random:77"}) {
      evit_simt::setSchedule(evit_simt::parseSchedule(s));
      orders.push_back(run(gpu, images, 3, p, true));  // profiled: eager, every kernel runs under the schedule
    }
    evit_simt::setSchedule({});
    check(orders[0].logits == orders[1].logits && orders[0].logits == orders[2].logits && sameKept(orders[0], orders[1]) &&
              sameKept(orders[0], orders[2]),
          "forward, reverse and random thread orders give bit-identical logits and kept tokens");

    // Concurrent passes on more threads than contexts: each equals its sequential result.
    std::vector<ForwardResult> seq;
    for (int t = 0; t < 6; ++t) seq.push_back(run(gpu, randomImages(c, 1 + t, 40 + t), 1 + t, plans[t % plans.size()].second));
    std::vector<ForwardResult> par(6);
    std::vector<std::thread> threads;
    for (int t = 0; t < 6; ++t)
      threads.emplace_back([&, t] {
        for (int r = 0; r < 4; ++r) par[t] = run(gpu, randomImages(c, 1 + t, 40 + t), 1 + t, plans[t % plans.size()].second);
      });
    for (auto& th : threads) th.join();
    bool allSame = true;
    for (int t = 0; t < 6; ++t) allSame = allSame && par[t].logits == seq[t].logits && sameKept(par[t], seq[t]);
    check(allSame, "6 threads x 4 passes on 2 contexts: every result equals the sequential one");

    // A failed launch fails that pass only. Batch 2 is a new shape: its first pass launches eagerly.
    const auto two = randomImages(c, 2, 77);
    evit_simt::failLaunches("attentionKernel", 1);
    const std::string err = errorOf([&] { run(gpu, two, 2, plans[2].second); });
    evit_simt::resetInjection();
    check(err.find("attention") != std::string::npos && err.find("cudaErrorLaunchOutOfResources") != std::string::npos,
          "a failed launch rejects the pass: " + err);
    check(maxDiff(run(gpu, two, 2, plans[2].second).logits, run(cpuModel, two, 2, plans[2].second).logits) <= f32Tol,
          "the next pass runs correctly");
  }

  {
    // A failed capture falls back to launching eagerly, with the same results.
    cuda::CudaModel gpu(c, *weights, f32(8, 1));
    const auto images = randomImages(c, 2, 9);
    const auto& p = plans[1].second;
    const ForwardResult want = run(cpuModel, images, 2, p);
    const long captures = evit_simt::counters().capturesCompleted;
    evit_simt::failNextCapture();
    bool ok = true;
    // Pass 1 runs eagerly, pass 2 tries to capture.
    for (int i = 0; i < 2; ++i) ok = ok && maxDiff(run(gpu, images, 2, p).logits, want.logits) <= f32Tol;
    check(ok && evit_simt::counters().capturesCompleted == captures, "a failed capture runs the pass eagerly, correctly");
    for (int i = 0; i < 2; ++i) ok = ok && maxDiff(run(gpu, images, 2, p).logits, want.logits) <= f32Tol;
    check(ok && evit_simt::counters().capturesCompleted == captures + 1, "the next pass of that shape captures, and replays");

    // A sticky error makes the model refuse every later pass, saying why.
    evit_simt::stickyErrorAtNextSync(cudaErrorIllegalAddress);
    const std::string first = errorOf([&] { run(gpu, images, 2, p); });
    check(first.find("cudaErrorIllegalAddress") != std::string::npos, "the pass that hit a sticky error fails: " + first);
    const std::string later = errorOf([&] { run(gpu, images, 2, p); });
    check(later.find("unusable after an earlier error (cudaErrorIllegalAddress") != std::string::npos,
          "later passes are refused: " + later);
    // As a restarted process would: a clean device for what follows.
    evit_simt::resetInjection();
    evit_simt::clearStickyError();
  }

  {
    // uint8 images normalised on the device give the fp32 path's logits and kept tokens bit for
    // bit, on the CPU backend and on CUDA in f32 and f16, in chunks (maxBatch 4, batch 6), eager
    // and replayed; and their upload comes from the context's pinned staging buffer, a quarter
    // of fp32's bytes.
    const std::vector<float> lut = pixelLut(kMean, kStd, c.inChans);
    const int B = 6;
    const auto px = randomPixels(c, B, 61);
    std::vector<float> expanded(px.size());
    expandPixels(expanded.data(), px.data(), lut.data(), B, c.inChans, (size_t)c.imgH() * c.imgW());
    const auto& p = plans[1].second;
    const ForwardResult cpuF32 = run(cpuModel, expanded, B, p);
    const ForwardResult cpuU8 = runPixels(cpuModel, px, lut, B, p);
    check(cpuU8.logits == cpuF32.logits && sameKept(cpuU8, cpuF32),
          "CPU backend: uint8 images through the table give the fp32 images' logits and kept tokens bit for bit");
    for (Precision prec : {Precision::F32, Precision::F16}) {
      CudaOptions o = f32(4, 2);
      o.precision = prec;
      const std::string name = precisionName(prec);
      cuda::CudaModel gpu(c, *weights, o);
      const ForwardResult want = run(gpu, expanded, B, p);
      bool same = true;
      size_t h2d = 0, pinned = 0;
      for (int pass = 0; pass < 3; ++pass) {  // eager, capture, replay
        const auto before = evit_simt::counters();
        const ForwardResult got = runPixels(gpu, px, lut, B, p);
        const auto after = evit_simt::counters();
        h2d += after.hostToDeviceBytes - before.hostToDeviceBytes;
        pinned += after.hostToDevicePinnedBytes - before.hostToDevicePinnedBytes;
        same = same && got.logits == want.logits && sameKept(got, want);
      }
      check(same, name + ": uint8 images give the fp32 images' logits and kept tokens bit for bit, 3 passes of 2 chunks");
      const size_t wantBytes = 3 * (px.size() + 2 * lut.size() * sizeof(float));  // pixels, and the table per chunk
      check(h2d == wantBytes && pinned == h2d,
            name + ": every uint8 upload comes from pinned memory (" + std::to_string(pinned) + " of " +
                std::to_string(h2d) + " bytes, expected " + std::to_string(wantBytes) + ")");
      const auto before = evit_simt::counters();
      const ForwardResult again = run(gpu, expanded, B, p);
      const auto after = evit_simt::counters();
      const size_t f32Bytes = expanded.size() * sizeof(float);
      check(again.logits == want.logits && after.hostToDeviceBytes - before.hostToDeviceBytes == f32Bytes &&
                after.hostToDevicePinnedBytes - before.hostToDevicePinnedBytes == f32Bytes,
            name + ": fp32 images are staged through pinned memory too (" + std::to_string(f32Bytes) + " bytes)");
      // Against the CPU backend: dense, so that a near-tie swap of a kept token (which the 16-bit
      // tolerances of docs/CUDA.md allow) cannot move the logits further.
      const double tol = logitTolerance(prec, range);
      const double d = maxDiff(runPixels(gpu, px, lut, B, plans[0].second).logits,
                               runPixels(cpuModel, px, lut, B, plans[0].second).logits);
      std::string why;
      check(d <= tol && keptAlike(want, cpuU8, B, why), name + ": uint8 logits within " + std::to_string(tol) +
                                                           " of the CPU backend's (max diff " + std::to_string(d) +
                                                           "), kept tokens alike " + why);
    }
  }

  for (Precision prec : {Precision::F16, Precision::BF16}) {
    // 16-bit weights are converted on the device, and GEMMs and attention run on tensor cores.
    CudaOptions o = f32(4, 1);
    o.precision = prec;
    const std::string name = precisionName(prec);
    cuda::CudaModel gpu(c, *weights, o);
    const double tol = logitTolerance(prec, range);
    evit_simt::clearLaunchRecords();
    for (const auto& [plan, p] : plans) {
      const int B = 5;  // one chunk of 4 and one of 1
      const auto images = randomImages(c, B, 300 + B);
      const ForwardResult want = run(cpuModel, images, B, p);
      const ForwardResult got = run(gpu, images, B, p);
      const double d = maxDiff(got.logits, want.logits);
      std::string why;
      check(d <= tol, name + " " + plan + ": logits within " + std::to_string(tol) + " of the CPU backend (max diff " +
                          std::to_string(d) + ")");
      check(keptAlike(got, want, B, why), name + " " + plan + ": kept tokens the same up to near-tie swaps " + why);
    }
    bool tensorCores = false;
    for (const auto& r : evit_simt::launchRecords()) tensorCores = tensorCores || (r.mma > 0 && r.kernel.find("linearMma") != std::string::npos);
    check(tensorCores, name + ": the GEMMs ran on the tensor-core kernel");
  }

  {
    // A hidden layer of 512: fc2's K = 512 over few tiles splits in two (cuda/gemm_tiles.h), into
    // the context's workspace, eagerly, captured into a graph and replayed.
    ModelConfig wideMlp = c;
    wideMlp.mlpHidden = 512;
    auto w = randomWeights(wideMlp, 11);
    cpu::CpuModel cpuWide(wideMlp, w);
    const std::vector<BlockPlan> p = plan(wideMlp, {{1, {20, true}}});
    const double wideRange = maxAbs(run(cpuWide, randomImages(wideMlp, 3, 400), 3, p).logits);
    CudaOptions o = f32(4, 1);
    o.precision = Precision::F16;
    cuda::CudaModel gpu(wideMlp, *w, o);
    evit_simt::clearLaunchRecords();
    const auto images = randomImages(wideMlp, 3, 400);
    const ForwardResult want = run(cpuWide, images, 3, p);
    for (int pass = 0; pass < 3; ++pass) {
      const ForwardResult got = run(gpu, images, 3, p);
      const double d = maxDiff(got.logits, want.logits), tol = logitTolerance(Precision::F16, wideRange);
      check(d <= tol, "f16, hidden 512, pass " + std::to_string(pass + 1) + ": logits within " + std::to_string(tol) +
                          " of the CPU backend (max diff " + std::to_string(d) + ")");
    }
    int splitGemms = 0, reduces = 0;
    for (const auto& r : evit_simt::launchRecords()) {
      splitGemms += r.kernel.find("linearMmaKernel") != std::string::npos && r.grid.z > 1;
      reduces += r.kernel.find("splitKReduceKernel") != std::string::npos;
    }
    check(splitGemms > 0 && splitGemms == reduces, "f16, hidden 512: fc2 split K (" + std::to_string(splitGemms) +
                                                       " split launches, " + std::to_string(reduces) + " reduces)");
  }

  {
    // maxBatch and streams are the binding's to check (test/device.test.js); the backend trusts them.
    ModelConfig wide = c;
    wide.embedDim = 384;
    wide.numHeads = 2;
    const std::string heads = errorOf([&] { cuda::CudaModel bad(wide, *randomWeights(wide, 1), f32(1, 1)); });
    check(heads.find("head dimensions up to 128") != std::string::npos, "head dimension 192 is refused at load: " + heads);
    // Out of device memory at load names what the memory was for.
    auto cfg = evit_simt::deviceConfig();
    auto small = cfg;
    small.totalGlobalMem = 1 << 20;
    evit_simt::setDeviceConfig(small);
    const std::string oom = errorOf([&] { cuda::CudaModel m(c, *weights, f32(64, 2)); });
    evit_simt::setDeviceConfig(cfg);
    check(oom.find("cudaErrorMemoryAllocation") != std::string::npos && oom.find("execution context") != std::string::npos,
          "a device too small for the activations: " + oom);
  }
  const auto end = evit_simt::counters();
  check(end.liveDeviceAllocations == 0 && end.livePinnedAllocations == 0,
        "every device and pinned allocation was freed (" + std::to_string(end.liveDeviceAllocations) + " device, " +
            std::to_string(end.livePinnedAllocations) + " pinned live)");
  std::printf("# %d checks, %d failed\n", checks, failures);
  return failures ? 1 : 0;
}
