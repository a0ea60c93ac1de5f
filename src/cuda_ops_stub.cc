// binding.cudaOps in a build without nvcc: the same functions, each saying why it cannot run.
#include "cuda_ops_binding.h"

namespace evit {

namespace {

Napi::Value NoCuda(const Napi::CallbackInfo& info) {
  Napi::Error e = Napi::Error::New(info.Env(), "this build of evit has no CUDA backend (built without nvcc)");
  e.Set("code", Napi::String::New(info.Env(), "EVIT_NO_CUDA"));
  throw e;
}

}  // namespace

Napi::Object DefineCudaOps(Napi::Env env) {
  Napi::Object o = Napi::Object::New(env);
  for (const char* name : {"layerNorm", "linear", "attention", "topkGatherFuse", "patchify", "assembleTokens", "convert"})
    o.Set(name, Napi::Function::New<NoCuda>(env, name));
  return o;
}

}  // namespace evit
