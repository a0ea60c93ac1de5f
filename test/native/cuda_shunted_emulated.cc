// The CUDA backend's Shunted Transformer (cuda/shunted_model.cu with the real kernels) on the SIMT
// emulator, against the CPU backend's (src/cpu/shunted_model.cc) on a small random model with
// every code path: a stem 3×3 conv, sr ratios 4, 2 and 1 (two head groups; a 1×1 sr conv that is
// the GEMM alone and one that goes through im2col; self-attention with the local conv after it),
// head dims 8 to 24. Checks f32, f16 and bf16 within docs/CUDA.md's tolerances, graph capture and
// replay, convolutions in chunks of images, the profile slots, thread orders, and the load-time
// refusals; then that every allocation was freed. Prints one "ok"/"not ok" line per check.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "../../cuda/device_properties.h"
#include "../../cuda/shunted_model.h"
#include "../../src/cpu/shunted_model.h"
#include "evit_simt/control.h"

using namespace evit;

namespace {

int failures = 0, checks = 0;
void check(bool ok, const std::string& what) {
  ++checks;
  if (!ok) ++failures;
  std::printf("%s %d - %s\n", ok ? "ok" : "not ok", checks, what.c_str());
}

ShuntedConfig smallConfig() {
  ShuntedConfig c;
  // dim, depth, heads, srRatio, mlpHidden. Stage 3's C = 36 is not a whole number of 16-byte
  // chunks, so its 1×1 sr conv goes through im2col; stage 2's (C = 32) is the GEMM alone.
  c.stages = {ShuntedStage{16, 1, 2, 4, 32}, ShuntedStage{32, 1, 2, 2, 64}, ShuntedStage{36, 1, 4, 2, 72},
              ShuntedStage{48, 2, 2, 1, 96}};
  c.numConv = 1;
  c.stemWidth = 8;
  c.imgH = c.imgW = 64;  // stage grids 16, 8, 4, 2
  c.numClasses = 7;
  return c;
}

// Random tensors for the spec list: LayerNorm weights near 1, everything else small, each layer
// scaled by its fan-in so activations stay in range through the stages.
std::map<std::string, std::vector<float>> randomTensors(const ShuntedConfig& c, unsigned seed) {
  std::mt19937 rng(seed);
  std::map<std::string, std::vector<float>> store;
  const auto specs = shuntedTensorSpecs(c);
  for (size_t i = 0; i < specs.size(); ++i) {
    const TensorSpec& s = specs[i];
    const bool weight = s.name.size() > 7 && s.name.compare(s.name.size() - 7, 7, ".weight") == 0;
    const bool norm = weight && s.name.find("norm") != std::string::npos;
    size_t fanIn = 1;
    if (weight && !norm) {
      const size_t rows = specs[i + 1].numel;  // the bias follows its weight
      fanIn = std::max<size_t>(1, s.numel / rows);
    }
    std::normal_distribution<float> d(norm ? 1.0f : 0.0f, norm ? 0.1f : weight ? 1.0f / std::sqrt((float)fanIn) : 0.1f);
    auto& v = store[s.name];
    v.resize(s.numel);
    for (float& x : v) x = d(rng);
  }
  return store;
}

std::shared_ptr<HostWeights> hostWeights(const ShuntedConfig& c, const std::map<std::string, std::vector<float>>& store) {
  return std::make_shared<HostWeights>(shuntedTensorSpecs(c), [&](const std::string& n) -> HostTensor {
    auto it = store.find(n);
    return it == store.end() ? HostTensor{nullptr, 0} : HostTensor{it->second.data(), it->second.size()};
  });
}

std::vector<float> randomImages(const ShuntedConfig& c, int B, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(-2, 2);
  std::vector<float> v((size_t)B * c.inChans * c.imgH * c.imgW);
  for (float& x : v) x = d(rng);
  return v;
}

ForwardResult run(PreparedModel& m, const std::vector<float>& images, int B, bool profile = false) {
  ForwardRequest req;
  req.images = images.data();
  req.batch = B;
  req.tokens = m.validatePlan({});
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

CudaOptions options(Precision p, int maxBatch, int streams) {
  CudaOptions o;
  o.precision = p;
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

bool ranKernel(const std::string& part) {
  for (const auto& r : evit_simt::launchRecords())
    if (r.kernel.find(part) != std::string::npos) return true;
  return false;
}

// docs/CUDA.md's Shunted tolerances (test/gpu/compare.js), stated for logits within ±7; this
// random model's logits span `range`, so they scale with it.
double logitTolerance(Precision p, double range) {
  const double base = p == Precision::F32 ? 1e-3 : p == Precision::F16 ? 3e-2 : 1.5e-1;
  return base * std::max(1.0, range / 7.0);
}

int runChecks() {
  const ShuntedConfig c = smallConfig();
  validateShuntedConfig(c);
  const auto store = randomTensors(c, 11);
  cpu::CpuShuntedModel cpuModel(c, hostWeights(c, store));  // relays its own copy in place
  const auto weights = hostWeights(c, store);
  double range = 0;
  for (float v : run(cpuModel, randomImages(c, 3, 1), 3).logits) range = std::max(range, (double)std::fabs(v));
  const double f32Tol = logitTolerance(Precision::F32, range);

  {
    cuda::CudaShuntedModel gpu(c, *weights, options(Precision::F32, 2, 2));
    check(gpu.convChunk() == 2, "the default column budget takes a whole maxBatch per convolution call");
    check(gpu.planLength() == 0 && gpu.input().height == 64 && gpu.numClasses() == 7, "input, classes and an empty plan");
    const auto before = evit_simt::counters();
    for (int B : {1, 3}) {
      const auto images = randomImages(c, B, 100 + B);
      const ForwardResult want = run(cpuModel, images, B);
      std::vector<ForwardResult> passes;
      for (int pass = 0; pass < 3; ++pass) passes.push_back(run(gpu, images, B));  // eager, capture, replay
      const double d = maxDiff(passes[0].logits, want.logits);
      check(d <= f32Tol, "f32 batch " + std::to_string(B) + (B > 2 ? " (chunks of 2 and 1)" : "") +
                             ": logits match the CPU backend within " + std::to_string(f32Tol) + " (max diff " +
                             std::to_string(d) + ", logits up to " + std::to_string(range) + ")");
      check(passes[1].logits == passes[0].logits && passes[2].logits == passes[0].logits && passes[0].kept.empty(),
            "f32 batch " + std::to_string(B) + ": captured and replayed passes give the eager pass's bits; nothing kept");
    }
    const auto after = evit_simt::counters();
    const size_t uploaded = 3 * (1 + 3) * (size_t)c.inChans * c.imgH * c.imgW * sizeof(float);
    check(after.hostToDeviceBytes - before.hostToDeviceBytes == uploaded &&
              after.hostToDevicePinnedBytes - before.hostToDevicePinnedBytes == uploaded,
          "every image upload comes from pinned staging (" +
              std::to_string(after.hostToDevicePinnedBytes - before.hostToDevicePinnedBytes) + " of " +
              std::to_string(after.hostToDeviceBytes - before.hostToDeviceBytes) + " bytes, expected " +
              std::to_string(uploaded) + ")");
    check(after.capturesCompleted > before.capturesCompleted && after.graphLaunches > before.graphLaunches,
          "repeated shapes were captured (" + std::to_string(after.capturesCompleted - before.capturesCompleted) +
              ") and replayed (" + std::to_string(after.graphLaunches - before.graphLaunches) + " graph launches)");
    evit_simt::clearLaunchRecords();
    run(gpu, randomImages(c, 1, 100 + 1), 1);
    bool fromGraph = !evit_simt::launchRecords().empty();
    for (const auto& r : evit_simt::launchRecords()) fromGraph = fromGraph && r.fromGraph;
    check(fromGraph, "a replayed pass runs every kernel from its graph (" +
                         std::to_string(evit_simt::launchRecords().size()) + " launches)");

    // Profile: every model slot and every block's slots charged, the same logits as unprofiled.
    const auto images = randomImages(c, 2, 5);
    const ForwardResult plain = run(gpu, images, 2);
    evit_simt::clearLaunchRecords();
    const ForwardResult prof = run(gpu, images, 2, true);
    check(prof.profile.size() == shuntedProfileSize(c.totalDepth()), "profile has a slot per op");
    bool allTimed = prof.profile[kShuntedStem] > 0 && prof.profile[kShuntedPatchEmbed] > 0 &&
                    prof.profile[kShuntedStageNorm] > 0 && prof.profile[kShuntedHead] > 0;
    for (int b = 0; b < c.totalDepth(); ++b)
      for (int s = 0; s < kShuntedBlockSlots; ++s) allTimed = allTimed && prof.profile[shuntedProfileSlot(b, (ShuntedBlockSlot)s)] > 0;
    check(allTimed, "every model slot and every block's nine slots have a positive time");
    check(prof.logits == plain.logits, "the profiled (eager) pass gives the same bits");
    check(ranKernel("im2colKernel") && ranKernel("depthwise3x3Kernel<float, true>") &&
              ranKernel("depthwise3x3Kernel<float, false>") && ranKernel("meanTokensKernel") &&
              ranKernel("attentionKernel<float, false>") && ranKernel("layerNormKernel<float, true>"),
          "a pass runs im2col, both depthwise forms, group attention, LayerNorm + GELU and the token mean");

    // The thread order inside blocks does not change a single bit of the result.
    std::vector<ForwardResult> orders;
    for (const char* s : {"forward", "reverse", "random:77"}) {
      evit_simt::setSchedule(evit_simt::parseSchedule(s));
      orders.push_back(run(gpu, images, 2, true));  // profiled: eager, every kernel runs under the schedule
    }
    evit_simt::setSchedule({});
    check(orders[0].logits == orders[1].logits && orders[0].logits == orders[2].logits,
          "forward, reverse and random thread orders give bit-identical logits");

    // A failed launch fails that pass only. Batch 2 is not captured yet in this model's second context.
    evit_simt::failLaunches("depthwise3x3Kernel", 1);
    const std::string err = errorOf([&] { run(gpu, randomImages(c, 2, 77), 2, true); });
    evit_simt::resetInjection();
    check(err.find("depthwise3x3") != std::string::npos, "a failed launch rejects the pass: " + err);
    check(run(gpu, images, 2).logits == plain.logits, "the next pass runs correctly");
  }

  {
    // Convolutions in chunks of one image (a column budget of one byte): the same bits as whole batches.
    cuda::CudaShuntedModel whole(c, *weights, options(Precision::BF16, 3, 1));
    cuda::CudaShuntedModel chunked(c, *weights, options(Precision::BF16, 3, 1), 1);
    const auto images = randomImages(c, 3, 9);
    check(chunked.convChunk() == 1, "a one-byte column budget runs one image per convolution call");
    check(run(chunked, images, 3).logits == run(whole, images, 3).logits,
          "convolutions run image by image give the bits of whole-batch convolutions");
  }

  for (Precision prec : {Precision::F16, Precision::BF16}) {
    const std::string name = precisionName(prec);
    cuda::CudaShuntedModel gpu(c, *weights, options(prec, 4, 1));
    const double tol = logitTolerance(prec, range);
    const auto images = randomImages(c, 3, 300);
    evit_simt::clearLaunchRecords();
    const double d = maxDiff(run(gpu, images, 3).logits, run(cpuModel, images, 3).logits);
    check(d <= tol, name + ": logits within " + std::to_string(tol) + " of the CPU backend (max diff " + std::to_string(d) + ")");
    check(ranKernel("linearMmaKernel") && ranKernel("attentionMmaKernel") && ranKernel("attentionKernel<"),
          name + ": GEMMs and the head-dim-16 attention on tensor cores, head dims 8 and 24 on the SIMT attention");
  }

  {
    // Refused at load, saying why: a head dim past 128, score rows past the device's shared memory.
    ShuntedConfig wide = c;
    wide.stages[3] = ShuntedStage{258, 1, 2, 1, 32};
    const std::string heads = errorOf([&] { cuda::CudaShuntedModel bad(wide, *hostWeights(wide, randomTensors(wide, 2)), options(Precision::F32, 1, 1)); });
    check(heads.find("head dimensions up to 128; stage 4 has 129") != std::string::npos, "head dim 129 is refused at load: " + heads);
    // At 128 px with sr 2 in stage 1, its second head group attends to all 1024 tokens: 67 KB of
    // score rows, past a device allowing 48 KiB.
    ShuntedConfig big = c;
    big.imgH = big.imgW = 128;
    big.stages[0].srRatio = 2;
    validateShuntedConfig(big);
    auto cfg = evit_simt::deviceConfig();
    auto small = cfg;
    small.sharedMemPerBlockOptin = 48 * 1024;
    evit_simt::setDeviceConfig(small);
    cuda::forgetDeviceProperties();
    const std::string smem = errorOf([&] { cuda::CudaShuntedModel bad(big, *hostWeights(big, randomTensors(big, 3)), options(Precision::F32, 1, 1)); });
    evit_simt::setDeviceConfig(cfg);
    cuda::forgetDeviceProperties();
    check(smem.find("stage 1's attention over 1024 keys needs") != std::string::npos &&
              smem.find("use a smaller input size") != std::string::npos,
          "attention score rows past the device's shared memory are refused at load: " + smem);
  }
  const auto end = evit_simt::counters();
  check(end.liveDeviceAllocations == 0 && end.livePinnedAllocations == 0,
        "every device and pinned allocation was freed (" + std::to_string(end.liveDeviceAllocations) + " device, " +
            std::to_string(end.livePinnedAllocations) + " pinned live)");
  std::printf("# %d checks, %d failed\n", checks, failures);
  return failures ? 1 : 0;
}

}  // namespace

int main() {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // every line out before a crash
  try {
    return runChecks();
  } catch (const std::exception& e) {
    std::printf("not ok %d - unexpected exception: %s\n", ++checks, e.what());
    return 1;
  }
}
