#include "model_handle.h"

#include "cpu/cpu_model.h"
#include "cpu/thread_pool.h"
#include "forward_worker.h"
#include "host_weights.h"
#include "napi_args.h"

namespace evit {

Napi::Function ModelHandle::Define(Napi::Env env) {
  return DefineClass(env, "Model",
                     {
                         InstanceMethod<&ModelHandle::Forward>("forward"),
                         InstanceMethod<&ModelHandle::Dispose>("dispose"),
                         InstanceAccessor<&ModelHandle::Backend>("backend"),
                         InstanceAccessor<&ModelHandle::Disposed>("disposed"),
                         InstanceAccessor<&ModelHandle::WeightBytes>("weightBytes"),
                     });
}

namespace {

ModelConfig configArg(const Napi::Value& v) {
  Napi::Env env = v.Env();
  if (!v.IsObject()) throw Napi::TypeError::New(env, "config must be an object");
  Napi::Object o = v.As<Napi::Object>();
  ModelConfig c;
  auto field = [&](const char* key, int hi) { return intArg(requireProp(o, key, "config"), std::string("config.") + key, 1, hi); };
  c.embedDim = field("embedDim", 65536);
  c.depth = field("depth", 1024);
  c.numHeads = field("numHeads", 65536);
  c.patchSize = field("patchSize", 1024);
  c.inChans = field("inChans", 64);
  c.gridH = field("gridH", 65536);
  c.gridW = field("gridW", 65536);
  c.numClasses = field("numClasses", 1000000);
  c.mlpHidden = field("mlpHidden", 262144);
  if (o.Has("eps")) {
    Napi::Value e = o.Get("eps");
    if (!e.IsNumber()) throw Napi::TypeError::New(env, "config.eps must be a number");
    c.eps = e.As<Napi::Number>().FloatValue();
  }
  try {
    validateConfig(c);
  } catch (const ArgumentError& e) {
    throw Napi::RangeError::New(env, e.what());
  }
  return c;
}

}  // namespace

ModelHandle::ModelHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ModelHandle>(info) {
  Napi::Env env = info.Env();
  if (!info.IsConstructCall()) throw Napi::TypeError::New(env, "Model must be called with new");
  const ModelConfig cfg = configArg(info[0]);
  if (!info[1].IsObject()) throw Napi::TypeError::New(env, "tensors must be an object of Float32Arrays");
  Napi::Object tensors = info[1].As<Napi::Object>();
  if (info.Length() > 2 && info[2].IsObject()) {
    Napi::Object opts = info[2].As<Napi::Object>();
    if (opts.Has("threads") && !opts.Get("threads").IsUndefined())
      cpu::configureThreads(intArg(opts.Get("threads"), "options.threads", 1, 1024));
  }
  std::shared_ptr<HostWeights> weights;
  try {
    weights = std::make_shared<HostWeights>(cfg, [&](const std::string& name) -> HostTensor {
      Napi::Value v = tensors.Get(name);
      if (v.IsUndefined()) return {nullptr, 0};
      auto arr = typedArrayArg<float>(v, "tensor " + name);
      static const float empty = 0.0f;
      return {arr.ElementLength() ? arr.Data() : &empty, arr.ElementLength()};
    });
  } catch (const ArgumentError& e) {
    throw Napi::RangeError::New(env, e.what());
  } catch (const std::bad_alloc&) {
    throw Napi::Error::New(env, "out of memory copying the weights");
  }
  weightBytes_ = weights->bytes();
  model_ = std::make_shared<cpu::CpuModel>(cfg, std::move(weights));
}

Napi::Value ModelHandle::Forward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!model_) throw Napi::Error::New(env, "model has been disposed");
  const ModelConfig& c = model_->config();
  const int batch = intArg(info[1], "batch", 1, 4096);
  const int64_t expected = (int64_t)batch * c.inChans * c.imgH() * c.imgW();
  auto images = typedArrayArg<float>(info[0], "images", expected);
  auto keep = typedArrayArg<int32_t>(info[2], "keep", c.depth);
  auto fuse = typedArrayArg<uint8_t>(info[3], "fuse", c.depth);

  ForwardRequest req;
  req.images = images.Data();
  req.batch = batch;
  req.profile = info.Length() > 4 && info[4].ToBoolean();
  req.plan.resize(c.depth);
  for (int i = 0; i < c.depth; ++i) req.plan[i] = BlockPlan{keep[i], fuse[i] != 0};
  try {
    validatePlan(c, req.plan);
  } catch (const ArgumentError& e) {
    throw Napi::RangeError::New(env, e.what());
  }
  auto* worker = new ForwardWorker(env, model_, std::move(req), info.This().As<Napi::Object>(), images);
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

void ModelHandle::Dispose(const Napi::CallbackInfo&) { model_.reset(); }

Napi::Value ModelHandle::Backend(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), "cpu"); }

Napi::Value ModelHandle::Disposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !model_); }

Napi::Value ModelHandle::WeightBytes(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), (double)weightBytes_);
}

}  // namespace evit
