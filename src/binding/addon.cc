// Module entry: the Model class and backendInfo(); in the test flavour (EVIT_TESTING) also
// `testing`, the single-op exports that tests and benchmarks call (src/testing).
#include <napi.h>

#include "backend_info.h"
#include "model_handle.h"
#ifdef EVIT_TESTING
#include "../testing/testing_exports.h"
#endif

namespace evit {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("Model", ModelHandle::Define(env));
  exports.Set("backendInfo", Napi::Function::New<BackendInfo>(env, "backendInfo"));
#ifdef EVIT_TESTING
  exports.Set("testing", DefineTesting(env));
#endif
  return exports;
}

}  // namespace evit

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return evit::Init(env, exports); }

NODE_API_MODULE(evit, InitModule)
