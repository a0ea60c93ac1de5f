#include "model_handle.h"

#include <algorithm>
#include <climits>
#include <cstring>
#include <initializer_list>
#include <string>

#include "../backend/cuda_backend.h"
#include "../backend/host_weights.h"
#include "../backend/page_buffer.h"
#include "../backend/pixels.h"
#include "../backend/shunted.h"
#include "../cpu/cpu_model.h"
#include "../cpu/shunted_model.h"
#include "../cpu/thread_pool.h"
#include "forward_worker.h"
#include "napi_args.h"

namespace evit {

Napi::Function ModelHandle::Define(Napi::Env env) {
  return DefineClass(env, "Model",
                     {
                         InstanceMethod<&ModelHandle::Forward>("forward"),
                         InstanceMethod<&ModelHandle::Dispose>("dispose"),
                         InstanceAccessor<&ModelHandle::Backend>("backend"),
                         InstanceAccessor<&ModelHandle::PrecisionName>("precision"),
                         InstanceAccessor<&ModelHandle::Disposed>("disposed"),
                         InstanceAccessor<&ModelHandle::WeightBytes>("weightBytes"),
                         InstanceAccessor<&ModelHandle::ActivationBytes>("activationBytes"),
                     });
}

namespace {

// dst = src for n floats; the index of the first NaN or infinity, or -1. One pass, at copy speed:
// the exponent test vectorises with the copy.
long copyFinite(float* __restrict dst, const float* __restrict src, size_t n) {
  const uint32_t* bits = reinterpret_cast<const uint32_t*>(src);
  constexpr size_t kBlock = 4096;
  for (size_t i0 = 0; i0 < n; i0 += kBlock) {
    const size_t i1 = std::min(n, i0 + kBlock);
    uint32_t nonFinite = 0;
    for (size_t i = i0; i < i1; ++i) {
      dst[i] = src[i];
      nonFinite |= (bits[i] & 0x7F800000u) == 0x7F800000u;
    }
    if (nonFinite)
      for (size_t i = i0; i < i1; ++i)
        if ((bits[i] & 0x7F800000u) == 0x7F800000u) return (long)i;
  }
  return -1;
}

// config.family: 'deit' (also when absent) or 'shunted'.
std::string familyArg(const Napi::Value& v) {
  Napi::Env env = v.Env();
  if (!v.IsObject()) throw typeError(env, "config must be an object");
  Napi::Value f = v.As<Napi::Object>().Get("family");
  if (f.IsUndefined()) return "deit";
  if (f.IsString()) {
    const std::string s = f.As<Napi::String>().Utf8Value();
    if (s == "deit" || s == "shunted") return s;
  }
  throw typeError(env, "config.family must be 'deit' or 'shunted', got " + f.ToString().Utf8Value());
}

ModelConfig configArg(const Napi::Value& v) {
  Napi::Env env = v.Env();
  Napi::Object o = v.As<Napi::Object>();
  ModelConfig c;
  // Integers here; their ranges are validateConfig's.
  auto field = [&](const char* key) {
    return intArg(requireProp(o, key, "config"), std::string("config.") + key, INT32_MIN, INT32_MAX);
  };
  c.embedDim = field("embedDim");
  c.depth = field("depth");
  c.numHeads = field("numHeads");
  c.patchSize = field("patchSize");
  c.inChans = field("inChans");
  c.gridH = field("gridH");
  c.gridW = field("gridW");
  c.numClasses = field("numClasses");
  c.mlpHidden = field("mlpHidden");
  if (o.Has("eps")) {
    Napi::Value e = o.Get("eps");
    if (!e.IsNumber()) throw typeError(env, "config.eps must be a number");
    c.eps = e.As<Napi::Number>().FloatValue();
  }
  try {
    validateConfig(c);
  } catch (const ArgumentError& e) {
    throw rangeError(env, e.what());
  }
  return c;
}

// { family: 'shunted', stages: [{ dim, depth, heads, srRatio, mlpHidden } × 4], numConv, inChans,
// imgH, imgW, numClasses, stemWidth? (64) }, validated once by validateShuntedConfig.
ShuntedConfig shuntedConfigArg(const Napi::Value& v) {
  Napi::Env env = v.Env();
  Napi::Object o = v.As<Napi::Object>();
  auto field = [&](const Napi::Object& from, const char* key, const std::string& what) {
    return intArg(requireProp(from, key, what), what + "." + key, INT32_MIN, INT32_MAX);
  };
  ShuntedConfig c;
  Napi::Value stages = requireProp(o, "stages", "config");
  if (!stages.IsArray() || stages.As<Napi::Array>().Length() != kShuntedStages)
    throw typeError(env, "config.stages must be an array of " + std::to_string(kShuntedStages) + " stage objects");
  for (int s = 0; s < kShuntedStages; ++s) {
    const std::string what = "config.stages[" + std::to_string(s) + "]";
    Napi::Value sv = stages.As<Napi::Array>().Get((uint32_t)s);
    if (!sv.IsObject()) throw typeError(env, what + " must be an object");
    Napi::Object so = sv.As<Napi::Object>();
    ShuntedStage& st = c.stages[s];
    st.dim = field(so, "dim", what);
    st.depth = field(so, "depth", what);
    st.heads = field(so, "heads", what);
    st.srRatio = field(so, "srRatio", what);
    st.mlpHidden = field(so, "mlpHidden", what);
  }
  c.numConv = field(o, "numConv", "config");
  c.inChans = field(o, "inChans", "config");
  c.imgH = field(o, "imgH", "config");
  c.imgW = field(o, "imgW", "config");
  c.numClasses = field(o, "numClasses", "config");
  if (o.Has("stemWidth") && !o.Get("stemWidth").IsUndefined()) c.stemWidth = field(o, "stemWidth", "config");
  try {
    validateShuntedConfig(c);
  } catch (const ArgumentError& e) {
    throw rangeError(env, e.what());
  }
  return c;
}

// The constructor's third argument: which backend, and how it is set up.
struct BackendOptions {
  bool cuda = false;
  CudaOptions cudaOptions;
  bool precisionGiven = false;
};

std::string stringArg(const Napi::Value& v, const std::string& what, std::initializer_list<const char*> allowed) {
  std::string list;
  for (const char* a : allowed) list += std::string(list.empty() ? "" : ", ") + "'" + a + "'";
  if (v.IsString()) {
    const std::string s = v.As<Napi::String>().Utf8Value();
    for (const char* a : allowed)
      if (s == a) return s;
  }
  throw typeError(v.Env(), what + " must be one of " + list + ", got " + v.ToString().Utf8Value());
}

BackendOptions backendArg(const Napi::Value& v) {
  BackendOptions b;
  if (v.IsUndefined() || v.IsNull()) return b;
  if (!v.IsObject()) throw typeError(v.Env(), "options must be an object");
  Napi::Object o = v.As<Napi::Object>();
  auto given = [&](const char* key) { return o.Has(key) && !o.Get(key).IsUndefined(); };
  if (given("threads")) cpu::configureThreads(intArg(o.Get("threads"), "options.threads", 1, Limits::kMaxThreads));
  if (given("device")) b.cuda = stringArg(o.Get("device"), "options.device", {"cpu", "cuda"}) == "cuda";
  if (given("precision")) {
    const std::string p = stringArg(o.Get("precision"), "options.precision", {"f32", "f16", "bf16"});
    b.cudaOptions.precision = p == "f32" ? Precision::F32 : p == "f16" ? Precision::F16 : Precision::BF16;
    b.precisionGiven = true;
  }
  if (given("maxBatch")) b.cudaOptions.maxBatch = intArg(o.Get("maxBatch"), "options.maxBatch", 1, Limits::kMaxBatch);
  if (given("streams")) b.cudaOptions.streams = intArg(o.Get("streams"), "options.streams", 1, Limits::kMaxStreams);
  // The CPU backend computes in fp32 only: a 16-bit request there would be silently ignored.
  if (!b.cuda && b.precisionGiven && b.cudaOptions.precision != Precision::F32)
    throw rangeError(v.Env(), std::string("options.precision '") + precisionName(b.cudaOptions.precision) +
                                  "' needs device 'cuda'; the CPU backend computes in f32");
  return b;
}

}  // namespace

ModelHandle::ModelHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ModelHandle>(info) {
  Napi::Env env = info.Env();
  if (!info.IsConstructCall()) throw typeError(env, "Model must be called with new");
  const bool shunted = familyArg(info[0]) == "shunted";
  ModelConfig cfg;
  ShuntedConfig shuntedCfg;
  if (shunted)
    shuntedCfg = shuntedConfigArg(info[0]);
  else
    cfg = configArg(info[0]);
  if (!info[1].IsObject()) throw typeError(env, "tensors must be an object of Float32Arrays");
  Napi::Object tensors = info[1].As<Napi::Object>();
  const BackendOptions backend = backendArg(info.Length() > 2 ? info[2] : env.Undefined());
  const TensorLookup lookup = [&](const std::string& name) -> HostTensor {
    Napi::Value v = tensors.Get(name);
    if (v.IsUndefined()) return {nullptr, 0};
    auto arr = typedArrayArg<float>(v, "tensor " + name);
    static const float empty = 0.0f;
    return {arr.ElementLength() ? arr.Data() : &empty, arr.ElementLength()};
  };
  std::shared_ptr<HostWeights> weights;
  try {
    weights = shunted ? std::make_shared<HostWeights>(shuntedTensorSpecs(shuntedCfg), lookup)
                      : std::make_shared<HostWeights>(cfg, lookup);
  } catch (const ArgumentError& e) {
    throw rangeError(env, e.what());
  } catch (const std::bad_alloc&) {
    throw nativeFailure(env, "out of memory copying the weights");
  }
  weightBytes_ = weights->bytes();
  if (!backend.cuda) {
    try {
      if (shunted)
        model_ = std::make_shared<cpu::CpuShuntedModel>(shuntedCfg, std::move(weights));
      else
        model_ = std::make_shared<cpu::CpuModel>(cfg, std::move(weights));
    } catch (const std::bad_alloc&) {
      throw nativeFailure(env, "out of memory preparing the model");
    }
    return;
  }
  try {
    // The device keeps its own copy: the host weights are freed when this scope ends.
    model_ = shunted ? makeCudaShuntedModel(shuntedCfg, *weights, backend.cudaOptions)
                     : makeCudaModel(cfg, *weights, backend.cudaOptions);
  } catch (const std::bad_alloc&) {
    throw nativeFailure(env, "out of host memory preparing the model for CUDA");
  } catch (const std::exception& e) {
    throw nativeFailure(env, std::string("CUDA backend: ") + e.what());
  }
  backend_ = "cuda";
  precision_ = precisionName(backend.cudaOptions.precision);
}

Napi::Value ModelHandle::Forward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!model_) throw nativeFailure(env, "model has been disposed");
  const int batch = intArg(info[1], "batch", 1, Limits::kMaxBatch);
  const InputShape shape = model_->input();
  const int64_t expected = (int64_t)batch * (int64_t)shape.floats();
  const int planLength = model_->planLength();
  const bool pixels = info[0].IsTypedArray() && info[0].As<Napi::TypedArray>().TypedArrayType() == napi_uint8_array;
  if (!pixels && !(info[0].IsTypedArray() && info[0].As<Napi::TypedArray>().TypedArrayType() == napi_float32_array))
    throw typeError(env, "images must be a Float32Array (normalised fp32) or a Uint8Array (uint8 pixels)");
  const Napi::Value normalize = info.Length() > 5 ? info[5] : env.Undefined();
  if (!pixels && !normalize.IsUndefined())
    throw typeError(env, "normalize (mean and std) applies to uint8 images only; these images are not a Uint8Array");
  auto keep = typedArrayArg<int32_t>(info[2], "keep", planLength);
  auto fuse = typedArrayArg<uint8_t>(info[3], "fuse", planLength);

  // The pass reads its own copy: JavaScript may transfer, resize or rewrite the caller's buffer
  // while the pass runs on a worker thread, and N-API cannot pin an ArrayBuffer's memory.
  PageBuffer owned;
  ForwardRequest req;
  if (pixels) {
    // uint8 [B, C, H, W] and the per-channel mean and std that normalise them (src/backend/pixels.h).
    auto images = typedArrayArg<uint8_t>(info[0], "images", expected);
    if (!normalize.IsObject())
      throw typeError(env, "uint8 images need normalize: { mean, std }, a Float32Array of " +
                               std::to_string(shape.channels) + " per channel each");
    Napi::Object o = normalize.As<Napi::Object>();
    auto mean = typedArrayArg<float>(requireProp(o, "mean", "normalize"), "normalize.mean", shape.channels);
    auto stdev = typedArrayArg<float>(requireProp(o, "std", "normalize"), "normalize.std", shape.channels);
    std::vector<float> lut;
    try {
      lut = pixelLut(mean.Data(), stdev.Data(), shape.channels);
    } catch (const ArgumentError& e) {
      throw rangeError(env, std::string("normalize.") + e.what());
    }
    // A model that takes pixels gets the table and the bytes; another gets them expanded to fp32
    // here, the same values its fp32 input would hold.
    const bool native = model_->takesPixels();
    const size_t lutBytes = lut.size() * sizeof(float);
    try {
      owned = PageBuffer(native ? lutBytes + (size_t)expected : (size_t)expected * sizeof(float));
    } catch (const std::bad_alloc&) {
      throw nativeFailure(env, "out of memory copying the input batch");
    }
    if (native) {
      std::memcpy(owned.as<char>(), lut.data(), lutBytes);
      std::memcpy(owned.as<char>() + lutBytes, images.Data(), (size_t)expected);
      req.pixelLut = owned.as<float>();
      req.pixels = reinterpret_cast<const uint8_t*>(owned.as<char>() + lutBytes);
    } else {
      expandPixels(owned.as<float>(), images.Data(), lut.data(), (size_t)batch, shape.channels,
                   (size_t)shape.height * shape.width);
      req.images = owned.as<float>();
    }
  } else {
    auto images = typedArrayArg<float>(info[0], "images", expected);
    try {
      owned = PageBuffer((size_t)expected * sizeof(float));
    } catch (const std::bad_alloc&) {
      throw nativeFailure(env, "out of memory copying the input batch");
    }
    // A NaN or infinity would run through and come out as NaN logits: refused, found during the copy.
    const long bad = copyFinite(owned.as<float>(), images.Data(), (size_t)expected);
    if (bad >= 0) {
      const size_t perImage = shape.floats();
      throw badInput(env, "input image " + std::to_string(bad / perImage) + " holds a non-finite value (" +
                              std::to_string(images.Data()[bad]) + " at element " + std::to_string(bad % perImage) +
                              "); every pixel must be a finite number");
    }
    req.images = owned.as<float>();
  }

  req.batch = batch;
  req.profile = info.Length() > 4 && info[4].ToBoolean();
  req.plan.resize(planLength);
  for (int i = 0; i < planLength; ++i) req.plan[i] = BlockPlan{keep[i], fuse[i] != 0};
  try {
    req.tokens = model_->validatePlan(req.plan);
  } catch (const ArgumentError& e) {
    throw rangeError(env, e.what());
  }
  auto* worker = new ForwardWorker(env, model_, std::move(req), std::move(owned), info.This().As<Napi::Object>());
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

void ModelHandle::Dispose(const Napi::CallbackInfo&) { model_.reset(); }

Napi::Value ModelHandle::Backend(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), backend_); }

Napi::Value ModelHandle::PrecisionName(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), precision_);
}

Napi::Value ModelHandle::Disposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !model_); }

Napi::Value ModelHandle::WeightBytes(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), (double)weightBytes_);
}

Napi::Value ModelHandle::ActivationBytes(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), model_ ? (double)model_->activationBytes() : 0.0);
}

}  // namespace evit
