// Runs one forward pass on a libuv worker thread and settles a Promise.
#pragma once

#include <napi.h>

#include <memory>

#include "../backend/backend.h"
#include "../backend/page_buffer.h"

namespace evit {

class ForwardWorker : public Napi::AsyncWorker {
 public:
  // `images` is the pass's own copy of the input; req.images points into it.
  ForwardWorker(Napi::Env env, std::shared_ptr<PreparedModel> model, ForwardRequest req, PageBuffer images,
                Napi::Object owner);
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
  PageBuffer images_;
  // Keeps the JS model object alive while the pass runs.
  Napi::ObjectReference owner_;
};

}  // namespace evit
