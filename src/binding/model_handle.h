// JS class `Model`: owns one prepared model; forward() runs a batch off the event loop.
#pragma once

#include <napi.h>

#include <memory>
#include <string>

#include "../backend/backend.h"

namespace evit {

class ModelHandle : public Napi::ObjectWrap<ModelHandle> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit ModelHandle(const Napi::CallbackInfo& info);

 private:
  Napi::Value Forward(const Napi::CallbackInfo& info);
  void Dispose(const Napi::CallbackInfo& info);
  Napi::Value Backend(const Napi::CallbackInfo& info);
  Napi::Value PrecisionName(const Napi::CallbackInfo& info);
  Napi::Value Disposed(const Napi::CallbackInfo& info);
  Napi::Value WeightBytes(const Napi::CallbackInfo& info);
  Napi::Value ActivationBytes(const Napi::CallbackInfo& info);

  // Shared with in-flight workers: dispose() drops this reference and the last
  // worker to finish frees the weights.
  std::shared_ptr<PreparedModel> model_;
  size_t weightBytes_ = 0;
  std::string backend_ = "cpu";   // the backend that really runs: 'cpu' or 'cuda'
  std::string precision_ = "f32";
};

}  // namespace evit
