// The CUDA backend's DeiT/EViT forward (cuda/cuda_model.cu, the real kernels) on the SIMT
// emulator's counting flavour, for the GPU cost model (bench/gpu-model/model.js): per launch
// the kernel, grid, block, shared memory, mma.sync count and global bytes / sectors, the op
// and block it belongs to, and the pass's host/device copies, as JSON on stdout.
//
//   deit_costs EMBED DEPTH HEADS MLP CLASSES IMG PATCH PRECISION PASS...
//   PASS = BATCH:KEEP[:u8] (KEEP 1 = dense; otherwise drops at blocks 3, 6, 9, fused, as SPEC §1;
//          u8: the images as 8-bit pixels normalised on the device, as classify and the server send
//          them; otherwise fp32 tensors)
//
// Random weights of the shape (the kernels' control flow does not depend on their values).
// Sampling (EVIT_SIMT_SAMPLE) makes large batches feasible; see test/simt/README.md.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "../../cuda/cuda_model.h"
#include "../../src/backend/pixels.h"
#include "evit_simt/control.h"
#include "records_json.h"

using namespace evit;

namespace {

const char* kBlockSlotNames[] = {"ln1", "qkv", "attention", "proj", "reorganise", "ln2", "fc1", "fc2"};

std::shared_ptr<HostWeights> randomWeights(const ModelConfig& c, std::map<std::string, std::vector<float>>& store) {
  std::mt19937 rng(7);
  std::normal_distribution<float> d(0.0f, 0.05f);
  for (const TensorSpec& s : tensorSpecs(c)) {
    const bool normW = s.name.find("norm") != std::string::npos && s.name.find("weight") != std::string::npos;
    auto& v = store[s.name];
    v.resize(s.numel);
    for (float& x : v) x = normW ? 1.0f : d(rng);
  }
  return std::make_shared<HostWeights>(c, [&](const std::string& n) -> HostTensor {
    auto it = store.find(n);
    return it == store.end() ? HostTensor{nullptr, 0} : HostTensor{it->second.data(), it->second.size()};
  });
}

// SPEC §1: drops at blocks 3, 6, 9 keeping ceil(rate * (N - 1)) tokens, fused.
std::vector<BlockPlan> keepPlan(const ModelConfig& c, double rate) {
  std::vector<BlockPlan> p(c.depth);
  if (rate >= 1.0) return p;
  int N = c.numPatches() + 1;
  for (int i : {3, 6, 9}) {
    if (i >= c.depth) break;
    const int k = (int)std::ceil(rate * (N - 1));
    if (k >= N - 1) continue;
    p[i] = BlockPlan{k, true};
    N = 1 + k + 1;
  }
  return p;
}

// The op of each profile lap, in the order cuda_model.cu takes them.
std::vector<std::pair<std::string, int>> lapNames(const ModelConfig& c, const std::vector<BlockPlan>& plan) {
  std::vector<std::pair<std::string, int>> v{{"patch_embed", -1}};
  for (int i = 0; i < c.depth; ++i)
    for (int s = 0; s < kBlockSlots; ++s)
      if (s != kReorganise || plan[i].keep >= 0) v.emplace_back(kBlockSlotNames[s], i);
  v.emplace_back("head", -1);
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 10) {
    std::fprintf(stderr, "usage: deit_costs EMBED DEPTH HEADS MLP CLASSES IMG PATCH f16|bf16|f32 BATCH:KEEP[:u8]...\n");
    return 2;
  }
  if (!evit_simt::countingBuild()) {
    std::fprintf(stderr, "deit_costs: built without the counting flavour (EVIT_SIMT_COUNTING)\n");
    return 2;
  }
  ModelConfig c;
  c.embedDim = std::atoi(argv[1]);
  c.depth = std::atoi(argv[2]);
  c.numHeads = std::atoi(argv[3]);
  c.mlpHidden = std::atoi(argv[4]);
  c.numClasses = std::atoi(argv[5]);
  c.patchSize = std::atoi(argv[7]);
  c.gridH = c.gridW = std::atoi(argv[6]) / c.patchSize;
  c.inChans = 3;
  const std::string prec = argv[8];
  struct Pass {
    int batch;
    double keep;
    bool pixels;
  };
  std::vector<Pass> passes;
  int maxBatch = 1;
  for (int a = 9; a < argc; ++a) {
    const std::string s = argv[a];
    const size_t colon = s.find(':');
    const int B = std::atoi(s.substr(0, colon).c_str());
    const size_t colon2 = colon == std::string::npos ? std::string::npos : s.find(':', colon + 1);
    const double keep = colon == std::string::npos ? 1.0 : std::atof(s.substr(colon + 1, colon2 - colon - 1).c_str());
    const std::string input = colon2 == std::string::npos ? "" : s.substr(colon2 + 1);
    if (B < 1 || keep <= 0 || keep > 1 || (!input.empty() && input != "u8")) {
      std::fprintf(stderr, "deit_costs: bad pass '%s' (BATCH:KEEP[:u8], KEEP in (0, 1])\n", s.c_str());
      return 2;
    }
    passes.push_back({B, keep, input == "u8"});
    maxBatch = std::max(maxBatch, B);
  }
  CudaOptions o;
  o.precision = prec == "f32" ? Precision::F32 : prec == "bf16" ? Precision::BF16 : Precision::F16;
  o.maxBatch = maxBatch;
  o.streams = 1;
  std::map<std::string, std::vector<float>> store;
  auto weights = randomWeights(c, store);
  auto model = makeCudaModel(c, *weights, o);
  store.clear();
  const size_t imageFloats = (size_t)c.inChans * c.imgH() * c.imgW();
  std::vector<float> images((size_t)maxBatch * imageFloats);
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> u(-2, 2);
  for (float& x : images) x = u(rng);
  std::vector<uint8_t> pixels(images.size());
  for (uint8_t& v : pixels) v = (uint8_t)(rng() & 0xFF);
  const float mean[3] = {0.485f, 0.456f, 0.406f}, stdev[3] = {0.229f, 0.224f, 0.225f};
  const std::vector<float> lut = pixelLut(mean, stdev, c.inChans);

  std::printf("{\"config\":{\"embed\":%d,\"depth\":%d,\"heads\":%d,\"mlp\":%d,\"classes\":%d,\"img\":%d,\"patch\":%d},"
              "\"precision\":%s,\"sampling\":{\"threshold\":%llu,\"interior\":%d},\"passes\":[",
              c.embedDim, c.depth, c.numHeads, c.mlpHidden, c.numClasses, c.imgH(), c.patchSize,
              jsonString(prec).c_str(), (unsigned long long)evit_simt::sampling().threshold,
              evit_simt::sampling().interior);
  for (size_t pi = 0; pi < passes.size(); ++pi) {
    const auto [B, keep, usePixels] = passes[pi];
    ForwardRequest req;
    if (usePixels) {
      req.pixels = pixels.data();
      req.pixelLut = lut.data();
    } else {
      req.images = images.data();
    }
    req.batch = B;
    req.plan = keepPlan(c, keep);
    req.tokens = validatePlan(c, req.plan);
    // Profiled: eager, with an event between ops, which tells the op of every launch. The
    // kernels and their counts are those of the graph a plain pass replays.
    req.profile = true;
    evit_simt::clearLaunchRecords();
    evit_simt::clearCopyRecords();
    const auto t0 = std::chrono::steady_clock::now();
    ForwardResult out;
    model->forward(req, out);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const auto recs = evit_simt::launchRecords();
    const auto copies = evit_simt::copyRecords();
    const auto laps = lapNames(c, req.plan);
    std::printf("%s{\"batch\":%d,\"keep\":%g,\"input\":\"%s\",\"emulatedSeconds\":%.3f,\"tokens\":[", pi ? "," : "", B,
                keep, usePixels ? "u8" : "f32", seconds);
    for (size_t i = 0; i < req.tokens.size(); ++i) std::printf("%s%d", i ? "," : "", req.tokens[i]);
    std::printf("],");
    printCopiesAndLaunches(copies, recs, [&](size_t lap) {
      return lap < laps.size() ? laps[lap] : std::pair<std::string, int>{"?", -1};
    });
    std::printf("}");
    std::fflush(stdout);
  }
  std::printf("]}\n");
  return 0;
}
