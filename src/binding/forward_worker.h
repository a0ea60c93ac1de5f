// Runs one forward pass on a libuv worker thread and settles a Promise.
#pragma once

#include <napi.h>

#include <memory>

#include "../backend/backend.h"

namespace evit {

class ForwardWorker : public Napi::AsyncWorker {
 public:
  ForwardWorker(Napi::Env env, std::shared_ptr<PreparedModel> model, ForwardRequest req, Napi::Object owner,
                Napi::TypedArray images);
  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  void Execute() override;
  void OnOK() override;
  void OnError(const Napi::Error& e) override;

 private:
  Napi::Promise::Deferred deferred_;
  std::shared_ptr<PreparedModel> model_;
  ForwardRequest req_;
  ForwardResult result_;
  // Keep the model object and the caller's input alive while native code reads them.
  Napi::ObjectReference owner_;
  Napi::Reference<Napi::TypedArray> images_;
};

}  // namespace evit
