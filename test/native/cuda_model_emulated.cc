// The CUDA backend's orchestration (cuda/cuda_model.cu and the arena, weights and context code)
// run on the host: the CUDA runtime and kernels are replaced by fake_cuda/, whose kernels are
// the CPU ops. Checks against the CPU backend: every plan shape, chunked batches, the graph
// cache, the profile, concurrent passes, and the error paths (failed launch, failed capture,
// sticky error), then that every allocation was freed. Prints one "ok"/"not ok" line per check.
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "../../cuda/cuda_model.h"
#include "../../src/cpu/cpu_model.h"
#include "fake_cuda/fake_cuda.h"

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

  {
    cuda::CudaModel gpu(c, *weights, f32(4, 2));
    for (const auto& [name, p] : plans)
      for (int B : {1, 3, 4, 9}) {
        const auto images = randomImages(c, B, 100 + B);
        const ForwardResult want = run(cpuModel, images, B, p);
        for (int pass = 0; pass < 3; ++pass) {  // eager, capture, replay
          const ForwardResult got = run(gpu, images, B, p);
          const std::string what = name + ", batch " + std::to_string(B) + ", pass " + std::to_string(pass + 1);
          const double d = maxDiff(got.logits, want.logits);
          check(d <= 1e-4, what + ": logits match the CPU backend (max diff " + std::to_string(d) + ")");
          check(sameKept(got, want), what + ": kept origins identical");
        }
      }
    check(fake_cuda::counters().captures > 0 && fake_cuda::counters().graphLaunches > 0,
          "repeated shapes were captured (" + std::to_string(fake_cuda::counters().captures.load()) +
              ") and replayed (" + std::to_string(fake_cuda::counters().graphLaunches.load()) + " graph launches)");

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
    check(maxDiff(prof.logits, run(cpuModel, images, 3, p).logits) <= 1e-4, "profiled pass gives the same logits");

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
    fake_cuda::failLaunches("attention", 1);
    const std::string err = errorOf([&] { run(gpu, two, 2, plans[2].second); });
    fake_cuda::reset();
    check(err.find("attention") != std::string::npos, "a failed launch rejects the pass: " + err);
    check(maxDiff(run(gpu, two, 2, plans[2].second).logits, run(cpuModel, two, 2, plans[2].second).logits) <= 1e-4,
          "the next pass runs correctly");
  }

  {
    // A failed capture falls back to launching eagerly, with the same results.
    cuda::CudaModel gpu(c, *weights, f32(8, 1));
    const auto images = randomImages(c, 2, 9);
    const auto& p = plans[1].second;
    const ForwardResult want = run(cpuModel, images, 2, p);
    const long captures = fake_cuda::counters().captures;
    fake_cuda::failNextCapture();
    bool ok = true;
    // Pass 1 runs eagerly, pass 2 tries to capture.
    for (int i = 0; i < 2; ++i) ok = ok && maxDiff(run(gpu, images, 2, p).logits, want.logits) <= 1e-4;
    check(ok && fake_cuda::counters().captures == captures, "a failed capture runs the pass eagerly, correctly");
    for (int i = 0; i < 2; ++i) ok = ok && maxDiff(run(gpu, images, 2, p).logits, want.logits) <= 1e-4;
    check(ok && fake_cuda::counters().captures == captures + 1, "the next pass of that shape captures, and replays");

    // A sticky error makes the model refuse every later pass, saying why.
    fake_cuda::stickyErrorAtNextSync(cudaErrorIllegalAddress);
    const std::string first = errorOf([&] { run(gpu, images, 2, p); });
    check(first.find("cudaErrorIllegalAddress") != std::string::npos, "the pass that hit a sticky error fails: " + first);
    fake_cuda::reset();
    const std::string later = errorOf([&] { run(gpu, images, 2, p); });
    check(later.find("unusable after an earlier error (cudaErrorIllegalAddress") != std::string::npos,
          "later passes are refused: " + later);
  }

  {
    // maxBatch and streams are the binding's to check (test/device.test.js); the backend trusts them.
    ModelConfig wide = c;
    wide.embedDim = 384;
    wide.numHeads = 2;
    const std::string heads = errorOf([&] { cuda::CudaModel bad(wide, *randomWeights(wide, 1), f32(1, 1)); });
    check(heads.find("head dimensions up to 128") != std::string::npos, "head dimension 192 is refused at load: " + heads);
    CudaOptions half = f32(2, 1);
    half.precision = Precision::BF16;
    const std::string bf16 = errorOf([&] { cuda::CudaModel m(c, *weights, half); });
    check(bf16.find("f32 only") != std::string::npos, "bf16 weights go through the convert kernel: " + bf16);
  }
  check(fake_cuda::counters().liveAllocations == 0,
        "every device and pinned allocation was freed (" + std::to_string(fake_cuda::counters().liveAllocations.load()) +
            " live)");
  std::printf("# %d checks, %d failed\n", checks, failures);
  return failures ? 1 : 0;
}
