#include "forward_worker.h"

#include <cstring>
#include <new>
#include <utility>

#include "js_errors.h"

namespace evit {

ForwardWorker::ForwardWorker(Napi::Env env, std::shared_ptr<PreparedModel> model, ForwardRequest req,
                             PageBuffer images, Napi::Object owner)
    : Napi::AsyncWorker(env, "evit:forward"),
      deferred_(Napi::Promise::Deferred::New(env)),
      model_(std::move(model)),
      req_(std::move(req)),
      images_(std::move(images)),
      owner_(Napi::Persistent(owner)) {}

void ForwardWorker::Execute() {
  try {
    model_->forward(req_, result_);
  } catch (const std::bad_alloc&) {
    SetError("out of memory running the forward pass");
  } catch (const std::exception& e) {
    SetError(e.what());
  }
  // Drop our share now: if dispose() came while we ran, the weights go here, off the JS thread;
  // so does the input copy.
  model_.reset();
  images_ = PageBuffer();
}

void ForwardWorker::OnOK() {
  Napi::Env env = Env();
  Napi::HandleScope scope(env);
  Napi::Object res = Napi::Object::New(env);
  auto logits = Napi::Float32Array::New(env, result_.logits.size());
  std::memcpy(logits.Data(), result_.logits.data(), result_.logits.size() * sizeof(float));
  res.Set("logits", logits);
  Napi::Array kept = Napi::Array::New(env, result_.kept.size());
  for (size_t i = 0; i < result_.kept.size(); ++i) {
    const KeptTokens& k = result_.kept[i];
    Napi::Object o = Napi::Object::New(env);
    o.Set("block", k.block);
    o.Set("perImage", k.perImage);
    auto tokens = Napi::Int32Array::New(env, k.origins.size());
    std::memcpy(tokens.Data(), k.origins.data(), k.origins.size() * sizeof(int32_t));
    o.Set("tokens", tokens);
    kept.Set((uint32_t)i, o);
  }
  res.Set("kept", kept);
  if (!result_.profile.empty()) {
    auto prof = Napi::Float64Array::New(env, result_.profile.size());
    std::memcpy(prof.Data(), result_.profile.data(), result_.profile.size() * sizeof(double));
    res.Set("profile", prof);
  }
  deferred_.Resolve(res);
}

void ForwardWorker::OnError(const Napi::Error& e) {
  Napi::Env env = Env();
  Napi::HandleScope scope(env);
  deferred_.Reject(nativeFailure(env, e.Message()).Value());
}

}  // namespace evit
