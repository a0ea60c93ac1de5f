#include "backend_info.h"

#include <cblas.h>

#include <string>

#include "../backend/backend.h"
#include "../backend/cuda_backend.h"
#include "../backend/shunted.h"
#include "../cpu/thread_pool.h"
#include "../cpu/vec_math.h"

namespace evit {

namespace {

template <size_t N>
Napi::Array names(Napi::Env env, const char* const (&list)[N]) {
  Napi::Array a = Napi::Array::New(env, N);
  for (size_t i = 0; i < N; ++i) a.Set((uint32_t)i, list[i]);
  return a;
}

Napi::Object cudaInfo(Napi::Env env) {
  const CudaReport r = probeCuda();
  Napi::Object cuda = Napi::Object::New(env);
  cuda.Set("compiled", r.compiled);
  cuda.Set("available", r.available);
  cuda.Set("reason", r.available ? env.Null() : Napi::String::New(env, r.reason));
  cuda.Set("driverVersion", r.driverVersion);
  cuda.Set("runtimeVersion", r.runtimeVersion);
  Napi::Array devs = Napi::Array::New(env, r.devices.size());
  for (size_t i = 0; i < r.devices.size(); ++i) {
    Napi::Object d = Napi::Object::New(env);
    d.Set("name", r.devices[i].name);
    d.Set("computeCapability", std::to_string(r.devices[i].major) + "." + std::to_string(r.devices[i].minor));
    d.Set("memoryBytes", (double)r.devices[i].memoryBytes);
    devs.Set((uint32_t)i, d);
  }
  cuda.Set("devices", devs);
  return cuda;
}

}  // namespace

Napi::Value BackendInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object res = Napi::Object::New(env);
  Napi::Object cpuInfo = Napi::Object::New(env);
  cpuInfo.Set("threads", cpu::configureThreads(0));
  cpuInfo.Set("blas", std::string(openblas_get_config()));
  cpuInfo.Set("blasCore", std::string(openblas_get_corename()));
  cpuInfo.Set("simd", cpu::hasAvx512() ? "avx512" : cpu::hasAvx2Fma() ? "avx2" : "scalar");
  res.Set("cpu", cpuInfo);
  res.Set("cuda", cudaInfo(env));

  Napi::Object limits = Napi::Object::New(env);
  limits.Set("maxBatch", Limits::kMaxBatch);
  limits.Set("maxThreads", Limits::kMaxThreads);
  limits.Set("maxStreams", Limits::kMaxStreams);
  limits.Set("maxPatches", Limits::kMaxPatches);
  res.Set("limits", limits);

  Napi::Object slots = Napi::Object::New(env);
  slots.Set("model", names(env, kModelSlotNames));
  slots.Set("block", names(env, kBlockSlotNames));
  // Another family's slots under its name (the DeiT ones above stay where they were).
  Napi::Object shunted = Napi::Object::New(env);
  shunted.Set("model", names(env, kShuntedModelSlotNames));
  shunted.Set("block", names(env, kShuntedBlockSlotNames));
  slots.Set("shunted", shunted);
  res.Set("profileSlots", slots);
  return res;
}

}  // namespace evit
