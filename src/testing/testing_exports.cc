#include "testing_exports.h"

namespace evit {

Napi::Object DefineTesting(Napi::Env env) {
  Napi::Object t = Napi::Object::New(env);
  t.Set("ops", DefineOps(env));
  t.Set("cudaHost", DefineCudaHostChecks(env));
#ifdef EVIT_WITH_CUDA
  t.Set("cudaOps", DefineCudaOps(env));
#endif
  return t;
}

}  // namespace evit
