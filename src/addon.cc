// Module entry: the Model class, backend information and the single-op test exports.
#include <napi.h>

#include <cblas.h>

#include "cpu/thread_pool.h"
#include "cpu/vec_math.h"
#include "cuda_host_checks.h"
#include "cuda_ops_binding.h"
#include "cuda_probe.h"
#include "model_handle.h"
#include "ops_binding.h"

namespace evit {

namespace {

Napi::Value BackendInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object res = Napi::Object::New(env);
  Napi::Object cpuInfo = Napi::Object::New(env);
  cpuInfo.Set("threads", cpu::configureThreads(0));
  cpuInfo.Set("blas", std::string(openblas_get_config()));
  cpuInfo.Set("blasCore", std::string(openblas_get_corename()));
  cpuInfo.Set("simd", cpu::hasAvx512() ? "avx512" : cpu::hasAvx2Fma() ? "avx2" : "scalar");
  res.Set("cpu", cpuInfo);

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
  res.Set("cuda", cuda);
  return res;
}

}  // namespace

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("Model", ModelHandle::Define(env));
  exports.Set("backendInfo", Napi::Function::New<BackendInfo>(env, "backendInfo"));
  exports.Set("ops", DefineOps(env));
  exports.Set("cudaOps", DefineCudaOps(env));
  exports.Set("cudaHost", DefineCudaHostChecks(env));
  return exports;
}

}  // namespace evit

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return evit::Init(env, exports); }

NODE_API_MODULE(evit, InitModule)
