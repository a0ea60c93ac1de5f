// The CUDA backend's Shunted Transformer forward (cuda/shunted_model.cu, the real kernels) on the
// SIMT emulator's counting flavour, for the GPU cost model: the same per-launch JSON as
// deit_costs.cc, so that bench/gpu-model/model.js prices both families alike.
//
//   shunted_costs t|s IMG PRECISION BATCH...
//
// The released shunted_t / shunted_s shapes (SSA.py; lib/weights/shunted.ts), random weights
// (control flow does not depend on them), fp32 images (the binding expands uint8 pixels for
// this family). Sampling (EVIT_SIMT_SAMPLE) makes large batches feasible.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "../../src/backend/cuda_backend.h"
#include "../../src/backend/shunted.h"
#include "evit_simt/control.h"
#include "records_json.h"

using namespace evit;

int main(int argc, char** argv) {
  if (argc < 5 || (std::string(argv[1]) != "t" && std::string(argv[1]) != "s")) {
    std::fprintf(stderr, "usage: shunted_costs t|s IMG f16|bf16|f32 BATCH...\n");
    return 2;
  }
  if (!evit_simt::countingBuild()) {
    std::fprintf(stderr, "shunted_costs: built without the counting flavour (EVIT_SIMT_COUNTING)\n");
    return 2;
  }
  const bool small = std::string(argv[1]) == "s";
  ShuntedConfig c;
  // dim, depth, heads, srRatio, mlpHidden (mlp ratios 8, 8, 4, 4).
  c.stages = {ShuntedStage{64, small ? 2 : 1, 2, 8, 512}, ShuntedStage{128, small ? 4 : 2, 4, 4, 1024},
              ShuntedStage{256, small ? 12 : 4, 8, 2, 1024}, ShuntedStage{512, 1, 16, 1, 2048}};
  c.numConv = small ? 1 : 0;
  c.imgH = c.imgW = std::atoi(argv[2]);
  c.numClasses = 1000;
  validateShuntedConfig(c);
  const std::string prec = argv[3];
  std::vector<int> batches;
  int maxBatch = 1;
  for (int a = 4; a < argc; ++a) {
    const int B = std::atoi(argv[a]);
    if (B < 1) {
      std::fprintf(stderr, "shunted_costs: bad batch '%s'\n", argv[a]);
      return 2;
    }
    batches.push_back(B);
    maxBatch = std::max(maxBatch, B);
  }
  std::map<std::string, std::vector<float>> store;
  std::mt19937 rng(7);
  std::normal_distribution<float> d(0.0f, 0.05f);
  const std::vector<TensorSpec> specs = shuntedTensorSpecs(c);
  for (const TensorSpec& s : specs) {
    auto& v = store[s.name];
    v.resize(s.numel);
    for (float& x : v) x = d(rng);
  }
  auto weights = std::make_shared<HostWeights>(specs, [&](const std::string& n) -> HostTensor {
    auto it = store.find(n);
    return it == store.end() ? HostTensor{nullptr, 0} : HostTensor{it->second.data(), it->second.size()};
  });
  CudaOptions o;
  o.precision = prec == "f32" ? Precision::F32 : prec == "bf16" ? Precision::BF16 : Precision::F16;
  o.maxBatch = maxBatch;
  o.streams = 1;
  auto model = makeCudaShuntedModel(c, *weights, o);
  store.clear();
  std::vector<float> images((size_t)maxBatch * c.inChans * c.imgH * c.imgW);
  std::uniform_real_distribution<float> u(-2, 2);
  for (float& x : images) x = u(rng);

  std::printf("{\"config\":{\"family\":\"shunted_%s\",\"img\":%d},\"precision\":%s,\"sampling\":{\"threshold\":%llu,"
              "\"interior\":%d},\"passes\":[",
              argv[1], c.imgH, jsonString(prec).c_str(), (unsigned long long)evit_simt::sampling().threshold,
              evit_simt::sampling().interior);
  for (size_t pi = 0; pi < batches.size(); ++pi) {
    ForwardRequest req;
    req.images = images.data();
    req.batch = batches[pi];
    req.tokens = model->validatePlan({});
    evit_simt::clearLaunchRecords();
    evit_simt::clearCopyRecords();
    const auto t0 = std::chrono::steady_clock::now();
    ForwardResult out;
    model->forward(req, out);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("%s{\"batch\":%d,\"keep\":1,\"input\":\"f32\",\"emulatedSeconds\":%.3f,", pi ? "," : "", req.batch,
                seconds);
    printCopiesAndLaunches(evit_simt::copyRecords(), evit_simt::launchRecords(),
                           [](size_t) { return std::pair<std::string, int>{"shunted", -1}; });
    std::printf("}");
    std::fflush(stdout);
  }
  std::printf("]}\n");
  return 0;
}
