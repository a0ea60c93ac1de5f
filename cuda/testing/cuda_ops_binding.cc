// binding.testing.cudaOps: each export validates its arguments like binding.testing.ops,
// uploads fp32 inputs, converts them to the requested precision on the device, runs one
// kernel on the default stream, waits, and returns fp32 results.

#include <climits>
#include <new>
#include <string>
#include <type_traits>
#include <vector>

#include "../../src/backend/cuda_backend.h"
#include "../../src/binding/napi_args.h"
#include "../../src/testing/testing_exports.h"
#include "../attention_internal.h"
#include "../conv_layout.h"
#include "../kernels.h"
#include "../linear_internal.h"

namespace evit {

namespace {

namespace cu = evit::cuda;
constexpr int kMaxDim = 1 << 20;

Napi::Error codedError(Napi::Env env, const std::string& code, const std::string& message) {
  Napi::Error e = Napi::Error::New(env, message);
  e.Set("code", Napi::String::New(env, code));
  return e;
}

// The probe's reason (no driver, driver too old, no device) says more than a raw CUDA error.
void requireDevice(Napi::Env env) {
  const CudaReport r = probeCuda();
  if (r.devices.empty()) throw codedError(env, "EVIT_NO_CUDA_DEVICE", "no usable CUDA device: " + r.reason);
}

// Device memory owned for the duration of one call.
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t bytes) : bytes_(bytes) {
    if (bytes) EVIT_CUDA_CHECK(cudaMalloc(&p_, bytes));
  }
  ~DeviceBuffer() { cudaFree(p_); }
  DeviceBuffer(DeviceBuffer&& o) noexcept : p_(o.p_), bytes_(o.bytes_) { o.p_ = nullptr; }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(DeviceBuffer&&) = delete;
  template <class T>
  T* as() const { return static_cast<T*>(p_); }
  size_t bytes() const { return bytes_; }

 private:
  void* p_ = nullptr;
  size_t bytes_;
};

DeviceBuffer upload(const float* src, size_t n) {
  DeviceBuffer d(n * sizeof(float));
  if (n) EVIT_CUDA_CHECK(cudaMemcpy(d.as<float>(), src, n * sizeof(float), cudaMemcpyHostToDevice));
  return d;
}

// fp32 host data as T on the device, rounded by the convert kernel under test.
template <class T>
DeviceBuffer uploadAs(const float* src, size_t n) {
  DeviceBuffer f = upload(src, n);
  DeviceBuffer t(n * sizeof(T));
  cu::convert<T>(t.as<T>(), f.as<float>(), (long)n, 0);
  return t;
}

inline float hostFloat(float v) { return v; }
inline float hostFloat(__half v) { return __half2float(v); }
inline float hostFloat(__nv_bfloat16 v) { return __bfloat162float(v); }

// Waits for the kernel (execution errors surface here) and copies n elements of T back as fp32.
template <class T>
Napi::Float32Array download(Napi::Env env, const DeviceBuffer& d, size_t n) {
  EVIT_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<T> host(n);
  if (n) EVIT_CUDA_CHECK(cudaMemcpy(host.data(), d.as<T>(), n * sizeof(T), cudaMemcpyDeviceToHost));
  auto a = Napi::Float32Array::New(env, n);
  for (size_t i = 0; i < n; ++i) a[i] = hostFloat(host[i]);
  return a;
}

enum class Precision { F32, F16, BF16 };

Precision precisionArg(const Napi::Value& v) {
  const std::string s = v.IsString() ? v.As<Napi::String>().Utf8Value() : "";
  if (s == "f32") return Precision::F32;
  if (s == "f16") return Precision::F16;
  if (s == "bf16") return Precision::BF16;
  throw rangeError(v.Env(), "precision must be 'f32', 'f16' or 'bf16'");
}

// Calls fn with a value of the element type named by p.
template <class Fn>
Napi::Value withPrecision(Precision p, Fn&& fn) {
  switch (p) {
    case Precision::F16: return fn(__half{});
    case Precision::BF16: return fn(__nv_bfloat16{});
    default: return fn(float{});
  }
}

// Which implementation a test asks for: 'auto' (what the forward pass would use), 'simt' or 'mma'.
std::string pathArg(const Napi::CallbackInfo& info, size_t i) {
  if (info.Length() <= i || info[i].IsUndefined()) return "auto";
  const std::string s = info[i].IsString() ? info[i].As<Napi::String>().Utf8Value() : "";
  if (s != "auto" && s != "simt" && s != "mma")
    throw rangeError(info.Env(), "path must be 'auto', 'simt' or 'mma'");
  return s;
}

// Runs body; CUDA failures become JS errors with code EVIT_CUDA (Napi errors pass through).
template <class Body>
Napi::Value guarded(const Napi::CallbackInfo& info, Body&& body) {
  requireDevice(info.Env());
  try {
    return body();
  } catch (const cu::CudaError& e) {
    throw codedError(info.Env(), "EVIT_CUDA", e.what());
  } catch (const std::bad_alloc&) {
    throw codedError(info.Env(), "EVIT_NATIVE", "out of host memory");
  }
}

// layerNorm(x, rows, C, w, b, eps, precision, gelu?): gelu runs layerNormGelu
Napi::Value LayerNorm(const Napi::CallbackInfo& info) {
  const int rows = intArg(info[1], "rows", 1, kMaxDim), C = intArg(info[2], "C", 1, kMaxDim);
  auto x = typedArrayArg<float>(info[0], "x", (int64_t)rows * C);
  auto w = typedArrayArg<float>(info[3], "w", C);
  auto b = typedArrayArg<float>(info[4], "b", C);
  if (!info[5].IsNumber() || !(info[5].As<Napi::Number>().DoubleValue() >= 0))
    throw typeError(info.Env(), "eps must be a non-negative number");
  const float eps = info[5].As<Napi::Number>().FloatValue();
  const Precision p = precisionArg(info[6]);
  const bool gelu = info.Length() > 7 && info[7].ToBoolean();
  return guarded(info, [&] {
    return withPrecision(p, [&](auto tag) -> Napi::Value {
      using T = decltype(tag);
      DeviceBuffer dx = upload(x.Data(), x.ElementLength()), dw = upload(w.Data(), C), db = upload(b.Data(), C);
      DeviceBuffer dy((size_t)rows * C * sizeof(T));
      if (gelu)
        cu::layerNormGelu<T>(dy.as<T>(), dx.as<float>(), C, dw.as<float>(), db.as<float>(), rows, C, eps, 0);
      else
        cu::layerNorm<T>(dy.as<T>(), dx.as<float>(), C, dw.as<float>(), db.as<float>(), rows, C, eps, 0);
      return download<T>(info.Env(), dy, (size_t)rows * C);
    });
  });
}

// linear(x, M, K, W, b, N, epilogue: 'bias' | 'gelu' | 'residual' | 'float' | 'relu', precision,
//        residual?, path?: 'auto' | 'simt' | 'mma', tiling?: { tiling: '128x128' | '128x64' | '64x64', splits? })
// 'auto' runs linear() with a split-K workspace, as the model does; `tiling` (path 'mma') forces
// the tensor-core tiling and split count.
Napi::Value Linear(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int M = intArg(info[1], "M", 1, kMaxDim), K = intArg(info[2], "K", 1, kMaxDim),
            N = intArg(info[5], "N", 1, kMaxDim);
  auto x = typedArrayArg<float>(info[0], "x", (int64_t)M * K);
  auto W = typedArrayArg<float>(info[3], "W", (int64_t)N * K);
  auto b = typedArrayArg<float>(info[4], "b", N);
  const std::string epName = info[6].ToString().Utf8Value();
  cu::Epilogue ep;
  if (epName == "bias") ep = cu::Epilogue::Bias;
  else if (epName == "gelu") ep = cu::Epilogue::BiasGelu;
  else if (epName == "residual") ep = cu::Epilogue::BiasResidual;
  else if (epName == "float") ep = cu::Epilogue::BiasFloat;
  else if (epName == "relu") ep = cu::Epilogue::BiasRelu;
  else throw rangeError(env, "epilogue must be 'bias', 'gelu', 'residual', 'float' or 'relu'");
  const Precision p = precisionArg(info[7]);
  const float* residual = nullptr;
  if (ep == cu::Epilogue::BiasResidual) residual = typedArrayArg<float>(info[8], "residual", (int64_t)M * N).Data();
  const std::string path = pathArg(info, 9);
  if (path == "mma" && (p == Precision::F32 || K % 8 != 0))
    throw rangeError(env, "path 'mma' needs precision 'f16' or 'bf16' and K % 8 == 0");
  bool forced = false;
  cu::MmaTiling tiling = cu::MmaTiling::k64x64;
  int splits = 1;
  if (info.Length() > 10 && !info[10].IsUndefined()) {
    if (path != "mma" || !info[10].IsObject()) throw rangeError(env, "tiling needs path 'mma' and is an object");
    const Napi::Object o = info[10].As<Napi::Object>();
    const std::string name = o.Get("tiling").IsString() ? o.Get("tiling").As<Napi::String>().Utf8Value() : "";
    int found = -1;
    for (int i = 0; i < cu::kMmaTilings; ++i)
      if (name == cu::kMmaTiles[i].name) found = i;
    if (found < 0) throw rangeError(env, "tiling.tiling must be '128x128', '128x64' or '64x64'");
    tiling = (cu::MmaTiling)found;
    if (!o.Get("splits").IsUndefined()) splits = intArg(o.Get("splits"), "tiling.splits", 1, cu::kMaxSplits);
    forced = true;
  }
  const bool floatOut = ep == cu::Epilogue::BiasResidual || ep == cu::Epilogue::BiasFloat;
  return guarded(info, [&] {
    return withPrecision(p, [&](auto tag) -> Napi::Value {
      using T = decltype(tag);
      DeviceBuffer dx = uploadAs<T>(x.Data(), (size_t)M * K), dW = uploadAs<T>(W.Data(), (size_t)N * K);
      DeviceBuffer db = upload(b.Data(), N);
      DeviceBuffer dout((size_t)M * N * (floatOut ? sizeof(float) : sizeof(T)));
      const size_t wsFloats = (size_t)cu::kMaxSplits * M * N;
      DeviceBuffer dws(wsFloats * sizeof(float));
      const cu::GemmWorkspace ws{dws.as<float>(), wsFloats};
      if (residual)
        EVIT_CUDA_CHECK(cudaMemcpy(dout.as<float>(), residual, (size_t)M * N * sizeof(float), cudaMemcpyHostToDevice));
      if (path == "simt") {
        cu::linearSimt<T>(dout.as<void>(), dx.as<T>(), dW.as<T>(), db.as<float>(), M, N, K, ep, 0);
      } else if constexpr (!std::is_same_v<T, float>) {
        if (path == "mma" && forced)
          cu::linearMmaWith<T>(tiling, splits, dout.as<void>(), dx.as<T>(), dW.as<T>(), db.as<float>(), M, N, K, ep, 0,
                               ws);
        else if (path == "mma")
          cu::linearMma<T>(dout.as<void>(), dx.as<T>(), dW.as<T>(), db.as<float>(), M, N, K, ep, 0);
        else
          cu::linear<T>(dout.as<void>(), dx.as<T>(), dW.as<T>(), db.as<float>(), M, N, K, ep, 0, ws);
      } else {
        cu::linear<T>(dout.as<void>(), dx.as<T>(), dW.as<T>(), db.as<float>(), M, N, K, ep, 0, ws);
      }
      return floatOut ? download<float>(env, dout, (size_t)M * N) : download<T>(env, dout, (size_t)M * N);
    });
  });
}

// attention(qkv, B, N, heads, headDim, withProbs, precision, path?: 'auto' | 'simt' | 'mma')
//   -> { out, probs? [B, heads, N] }
Napi::Value Attention(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int B = intArg(info[1], "B", 1, 65535), N = intArg(info[2], "N", 2, 65536),
            H = intArg(info[3], "heads", 1, 4096), d = intArg(info[4], "headDim", 1, 128);
  auto qkv = typedArrayArg<float>(info[0], "qkv", (int64_t)B * N * 3 * H * d);
  const bool withProbs = info[5].ToBoolean();
  const Precision p = precisionArg(info[6]);
  const std::string path = pathArg(info, 7);
  if (path == "mma" && (p == Precision::F32 || d % 16 != 0))
    throw rangeError(env, "path 'mma' needs precision 'f16' or 'bf16' and headDim % 16 == 0");
  return guarded(info, [&] {
    return withPrecision(p, [&](auto tag) -> Napi::Value {
      using T = decltype(tag);
      const size_t outN = (size_t)B * N * H * d, probsN = withProbs ? (size_t)B * H * N : 0;
      DeviceBuffer dqkv = uploadAs<T>(qkv.Data(), qkv.ElementLength()), dout(outN * sizeof(T)),
                   dprobs(probsN * sizeof(float));
      float* probs = withProbs ? dprobs.as<float>() : nullptr;
      if (path == "simt") {
        cu::attentionSimt<T>(dout.as<T>(), probs, dqkv.as<T>(), B, N, H, d, 0);
      } else if constexpr (!std::is_same_v<T, float>) {
        if (path == "mma")
          cu::attentionMma<T>(dout.as<T>(), probs, dqkv.as<T>(), B, N, H, d, 0);
        else
          cu::attention<T>(dout.as<T>(), probs, dqkv.as<T>(), B, N, H, d, 0);
      } else {
        cu::attention<T>(dout.as<T>(), probs, dqkv.as<T>(), B, N, H, d, 0);
      }
      Napi::Object res = Napi::Object::New(env);
      res.Set("out", download<T>(env, dout, outN));
      if (withProbs) res.Set("probs", download<float>(env, dprobs, probsN));
      return res;
    });
  });
}

// topkGatherFuse(x, probs, B, N, heads, C, k, fuse, originsIn?, fusedOrigin?) -> { out, origins }
Napi::Value TopkGatherFuse(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int B = intArg(info[2], "B", 1, 65535), N = intArg(info[3], "N", 2, kMaxDim),
            H = intArg(info[4], "heads", 1, 4096), C = intArg(info[5], "C", 1, kMaxDim);
  const int k = intArg(info[6], "k", 1, N - 1);
  auto x = typedArrayArg<float>(info[0], "x", (int64_t)B * N * C);
  auto probs = typedArrayArg<float>(info[1], "probs", (int64_t)B * H * N);
  const bool fuse = info[7].ToBoolean();
  const int32_t* originsIn = nullptr;
  if (info.Length() > 8 && !info[8].IsUndefined() && !info[8].IsNull())
    originsIn = typedArrayArg<int32_t>(info[8], "originsIn", (int64_t)B * (N - 1)).Data();
  const int32_t fusedOrigin =
      info.Length() > 9 && !info[9].IsUndefined() ? intArg(info[9], "fusedOrigin", INT32_MIN, INT32_MAX) : -1;
  return guarded(info, [&]() -> Napi::Value {
    const int outN = 1 + k + (fuse ? 1 : 0);
    DeviceBuffer dx = upload(x.Data(), x.ElementLength()), dp = upload(probs.Data(), probs.ElementLength());
    DeviceBuffer dy((size_t)B * outN * C * sizeof(float)), doOut((size_t)B * (outN - 1) * sizeof(int32_t));
    DeviceBuffer doIn(originsIn ? (size_t)B * (N - 1) * sizeof(int32_t) : 0);
    DeviceBuffer dOrder((size_t)B * (N - 1) * sizeof(int32_t)), dScores((size_t)B * (N - 1) * sizeof(float));
    if (originsIn)
      EVIT_CUDA_CHECK(cudaMemcpy(doIn.as<int32_t>(), originsIn, doIn.bytes(), cudaMemcpyHostToDevice));
    cu::topkGatherFuse(dy.as<float>(), doOut.as<int32_t>(), dOrder.as<int32_t>(), dScores.as<float>(), dx.as<float>(),
                       dp.as<float>(), originsIn ? doIn.as<int32_t>() : nullptr, B, N, H, C, k, fuse, fusedOrigin, 0);
    Napi::Object res = Napi::Object::New(env);
    res.Set("out", download<float>(env, dy, (size_t)B * outN * C));
    auto origins = Napi::Int32Array::New(env, (size_t)B * (outN - 1));
    EVIT_CUDA_CHECK(cudaMemcpy(origins.Data(), doOut.as<int32_t>(), doOut.bytes(), cudaMemcpyDeviceToHost));
    res.Set("origins", origins);
    return res;
  });
}

// patchify(img, B, inChans, gh, gw, p, precision) -> Float32Array [B * gh * gw, inChans * p * p]
Napi::Value Patchify(const Napi::CallbackInfo& info) {
  const int B = intArg(info[1], "B", 1, 65536), ic = intArg(info[2], "inChans", 1, 64),
            gh = intArg(info[3], "gh", 1, 4096), gw = intArg(info[4], "gw", 1, 4096), p = intArg(info[5], "p", 1, 1024);
  auto img = typedArrayArg<float>(info[0], "img", (int64_t)B * ic * gh * p * gw * p);
  const Precision prec = precisionArg(info[6]);
  return guarded(info, [&] {
    return withPrecision(prec, [&](auto tag) -> Napi::Value {
      using T = decltype(tag);
      const size_t n = img.ElementLength();  // im2col of a stride-p conv moves every pixel once
      DeviceBuffer dimg = upload(img.Data(), n), dcols(n * sizeof(T));
      cu::patchify<T>(dcols.as<T>(), dimg.as<float>(), B, ic, gh, gw, p, 0);
      return download<T>(info.Env(), dcols, n);
    });
  });
}

// assembleTokens(patches [B * P, C], cls [C], pos [(1 + P) * C], B, P, C) -> Float32Array [B, 1 + P, C]
Napi::Value AssembleTokens(const Napi::CallbackInfo& info) {
  const int B = intArg(info[3], "B", 1, 65536), P = intArg(info[4], "P", 1, kMaxDim), C = intArg(info[5], "C", 1, kMaxDim);
  auto patches = typedArrayArg<float>(info[0], "patches", (int64_t)B * P * C);
  auto cls = typedArrayArg<float>(info[1], "cls", C);
  auto pos = typedArrayArg<float>(info[2], "pos", (int64_t)(1 + P) * C);
  return guarded(info, [&]() -> Napi::Value {
    const size_t n = (size_t)B * (1 + P) * C;
    DeviceBuffer dp = upload(patches.Data(), patches.ElementLength()), dc = upload(cls.Data(), C),
                 dpos = upload(pos.Data(), pos.ElementLength()), dx(n * sizeof(float));
    cu::assembleTokens(dx.as<float>(), dp.as<float>(), dc.as<float>(), dpos.as<float>(), B, P, C, 0);
    return download<float>(info.Env(), dx, n);
  });
}

// conv2d(x, layout: 'nchw' | 'nhwc', W [Cout, Cin, k, k], b, B, H, W, Cin, Cout, k, stride, pad,
//        epilogue: 'bias' | 'relu' | 'float', precision, input?: 'float' | 'compute')
//   -> Float32Array [B, Ho, Wo, Cout]. input 'compute': x is first rounded to the precision on the
//   device and read as T (an activation), else read as fp32 (the image, the residual stream).
Napi::Value Conv2d(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string layout = info[1].ToString().Utf8Value();
  if (layout != "nchw" && layout != "nhwc") throw rangeError(env, "layout must be 'nchw' or 'nhwc'");
  const int B = intArg(info[4], "B", 1, 4096), H = intArg(info[5], "H", 1, 4096), Wd = intArg(info[6], "W", 1, 4096),
            Cin = intArg(info[7], "Cin", 1, 4096), Cout = intArg(info[8], "Cout", 1, 4096),
            k = intArg(info[9], "k", 1, 16), stride = intArg(info[10], "stride", 1, 16), pad = intArg(info[11], "pad", 0, 8);
  if (H + 2 * pad < k || Wd + 2 * pad < k) throw rangeError(env, "the kernel does not fit the padded image");
  auto x = typedArrayArg<float>(info[0], "x", (int64_t)B * H * Wd * Cin);
  auto W = typedArrayArg<float>(info[2], "W", (int64_t)Cout * Cin * k * k);
  auto b = typedArrayArg<float>(info[3], "b", Cout);
  const std::string epName = info[12].ToString().Utf8Value();
  cu::Epilogue ep;
  if (epName == "bias") ep = cu::Epilogue::Bias;
  else if (epName == "relu") ep = cu::Epilogue::BiasRelu;
  else if (epName == "float") ep = cu::Epilogue::BiasFloat;
  else throw rangeError(env, "epilogue must be 'bias', 'relu' or 'float'");
  const Precision p = precisionArg(info[13]);
  const std::string input = info.Length() > 14 && !info[14].IsUndefined() ? info[14].ToString().Utf8Value() : "float";
  if (input != "float" && input != "compute") throw rangeError(env, "input must be 'float' or 'compute'");
  const int Ho = (H + 2 * pad - k) / stride + 1, Wo = (Wd + 2 * pad - k) / stride + 1, Kp = cu::convDepth(Cin, k);
  const size_t rows = (size_t)B * Ho * Wo, outN = rows * Cout;
  std::vector<float> Wp((size_t)Cout * Kp);
  cu::convWeightForGemm(Wp.data(), W.Data(), Cout, Cin, k);
  const cu::ImageLayout lay = layout == "nchw" ? cu::ImageLayout::NCHW : cu::ImageLayout::NHWC;
  return guarded(info, [&] {
    return withPrecision(p, [&](auto tag) -> Napi::Value {
      using T = decltype(tag);
      const bool floatOut = ep == cu::Epilogue::BiasFloat;
      DeviceBuffer dW = uploadAs<T>(Wp.data(), Wp.size()), db = upload(b.Data(), Cout);
      DeviceBuffer dcols(rows * Kp * sizeof(T)), dout(outN * (floatOut ? sizeof(float) : sizeof(T)));
      if (input == "compute") {
        DeviceBuffer dx = uploadAs<T>(x.Data(), x.ElementLength());
        cu::conv2d<T, T>(dout.as<void>(), dcols.as<T>(), dx.as<T>(), lay, dW.as<T>(), db.as<float>(), B, H, Wd, Cin,
                         Cout, k, stride, pad, ep, 0);
        return floatOut ? download<float>(env, dout, outN) : download<T>(env, dout, outN);
      }
      DeviceBuffer dx = upload(x.Data(), x.ElementLength());
      cu::conv2d<T, float>(dout.as<void>(), dcols.as<T>(), dx.as<float>(), lay, dW.as<T>(), db.as<float>(), B, H, Wd,
                           Cin, Cout, k, stride, pad, ep, 0);
      return floatOut ? download<float>(env, dout, outN) : download<T>(env, dout, outN);
    });
  });
}

// depthwise3x3(x, xOffset, ldx, add | null, addOffset, ldAdd, W [C, 1, 3, 3], b, B, H, W, C, gelu,
//              inPlace, precision) -> Float32Array [B·H·W, C], as the CPU op's export. inPlace: the
//   output is written over (a copy of) add, which must then be contiguous.
Napi::Value Depthwise3x3(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int B = intArg(info[8], "B", 1, 4096), H = intArg(info[9], "H", 1, 4096), Wd = intArg(info[10], "W", 1, 4096),
            C = intArg(info[11], "C", 1, kMaxDim);
  const int64_t pixels = (int64_t)B * H * Wd;
  auto xa = typedArrayArg<float>(info[0], "x");
  const RowView xv = rowView(xa, info[1], info[2], pixels, C, "x");
  Napi::TypedArrayOf<float> aa;
  RowView av{0, C};
  const bool hasAdd = !info[3].IsNull() && !info[3].IsUndefined();
  if (hasAdd) {
    aa = typedArrayArg<float>(info[3], "add");
    av = rowView(aa, info[4], info[5], pixels, C, "add");
  }
  auto W = typedArrayArg<float>(info[6], "W", (int64_t)C * 9);
  auto b = typedArrayArg<float>(info[7], "b", C);
  const bool gelu = info[12].ToBoolean(), inPlace = info[13].ToBoolean();
  if (inPlace && (!hasAdd || av.stride != C)) throw rangeError(env, "inPlace needs a contiguous add (row stride C)");
  const Precision p = precisionArg(info[14]);
  std::vector<float> Wt((size_t)C * 9);
  cu::depthwiseWeightToTaps(Wt.data(), W.Data(), C);
  const size_t outN = (size_t)pixels * C;
  return guarded(info, [&] {
    return withPrecision(p, [&](auto tag) -> Napi::Value {
      using T = decltype(tag);
      DeviceBuffer dx = uploadAs<T>(xa.Data(), xa.ElementLength()), dW = upload(Wt.data(), Wt.size()),
                   db = upload(b.Data(), C);
      DeviceBuffer dadd = hasAdd && !inPlace ? uploadAs<T>(aa.Data(), aa.ElementLength()) : DeviceBuffer(0);
      DeviceBuffer dout = inPlace ? uploadAs<T>(aa.Data() + av.offset, outN) : DeviceBuffer(outN * sizeof(T));
      const T* add = inPlace ? dout.as<T>() : hasAdd ? dadd.as<T>() + av.offset : nullptr;
      cu::depthwise3x3<T>(dout.as<T>(), dx.as<T>() + xv.offset, xv.stride, add, av.stride, dW.as<float>(),
                          db.as<float>(), B, H, Wd, C, gelu, 0);
      return download<T>(env, dout, outN);
    });
  });
}

// groupAttention(out, oOffset, ldo, q, qOffset, ldq, k, kOffset, ldk, v, vOffset, ldv, B, N, M, heads,
//                headDim, precision, withProbs?, path?: 'auto' | 'simt' | 'mma')
//   -> { out: a copy of out with the attention written into its heads' channels, probs? [B, heads, M] }
Napi::Value GroupAttention(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int B = intArg(info[12], "B", 1, 65535), N = intArg(info[13], "N", 1, 65536), M = intArg(info[14], "M", 1, 65536),
            H = intArg(info[15], "heads", 1, 4096), d = intArg(info[16], "headDim", 1, 128);
  const int width = H * d;
  auto oa = typedArrayArg<float>(info[0], "out");
  const RowView ov = rowView(oa, info[1], info[2], (int64_t)B * N, width, "out");
  auto qa = typedArrayArg<float>(info[3], "q");
  const RowView qv = rowView(qa, info[4], info[5], (int64_t)B * N, width, "q");
  auto ka = typedArrayArg<float>(info[6], "k");
  const RowView kv = rowView(ka, info[7], info[8], (int64_t)B * M, width, "k");
  auto va = typedArrayArg<float>(info[9], "v");
  const RowView vv = rowView(va, info[10], info[11], (int64_t)B * M, width, "v");
  const Precision p = precisionArg(info[17]);
  const bool withProbs = info.Length() > 18 && info[18].ToBoolean();
  const std::string path = pathArg(info, 19);
  if (path == "mma" && (p == Precision::F32 || d % 16 != 0))
    throw rangeError(env, "path 'mma' needs precision 'f16' or 'bf16' and headDim % 16 == 0");
  return guarded(info, [&] {
    return withPrecision(p, [&](auto tag) -> Napi::Value {
      using T = decltype(tag);
      DeviceBuffer dout = uploadAs<T>(oa.Data(), oa.ElementLength()), dq = uploadAs<T>(qa.Data(), qa.ElementLength()),
                   dk = uploadAs<T>(ka.Data(), ka.ElementLength()), dv = uploadAs<T>(va.Data(), va.ElementLength());
      const size_t probsN = withProbs ? (size_t)B * H * M : 0;
      DeviceBuffer dprobs(probsN * sizeof(float));
      float* probs = withProbs ? dprobs.as<float>() : nullptr;
      T* o = dout.as<T>() + ov.offset;
      const T *q = dq.as<T>() + qv.offset, *k = dk.as<T>() + kv.offset, *v = dv.as<T>() + vv.offset;
      if (path == "simt") {
        cu::attentionSimt<T>(o, ov.stride, probs, q, qv.stride, k, kv.stride, v, vv.stride, B, N, M, H, d, 0);
      } else if constexpr (!std::is_same_v<T, float>) {
        if (path == "mma") {
          if (!cu::attentionMmaFits(o, ov.stride, q, qv.stride, k, kv.stride, v, vv.stride, d))
            throw rangeError(env, "path 'mma' needs k and v rows 16-byte and q and out rows 4-byte aligned");
          cu::attentionMma<T>(o, ov.stride, probs, q, qv.stride, k, kv.stride, v, vv.stride, B, N, M, H, d, 0);
        } else {
          cu::groupAttention<T>(o, ov.stride, probs, q, qv.stride, k, kv.stride, v, vv.stride, B, N, M, H, d, 0);
        }
      } else {
        cu::groupAttention<T>(o, ov.stride, probs, q, qv.stride, k, kv.stride, v, vv.stride, B, N, M, H, d, 0);
      }
      Napi::Object res = Napi::Object::New(env);
      res.Set("out", download<T>(env, dout, oa.ElementLength()));
      if (withProbs) res.Set("probs", download<float>(env, dprobs, probsN));
      return res;
    });
  });
}

// meanTokens(x, B, N, C, precision) -> Float32Array [B, C]
Napi::Value MeanTokens(const Napi::CallbackInfo& info) {
  const int B = intArg(info[1], "B", 1, 65536), N = intArg(info[2], "N", 1, kMaxDim), C = intArg(info[3], "C", 1, kMaxDim);
  auto x = typedArrayArg<float>(info[0], "x", (int64_t)B * N * C);
  const Precision p = precisionArg(info[4]);
  return guarded(info, [&] {
    return withPrecision(p, [&](auto tag) -> Napi::Value {
      using T = decltype(tag);
      DeviceBuffer dx = upload(x.Data(), x.ElementLength()), dout((size_t)B * C * sizeof(T));
      cu::meanTokens<T>(dout.as<T>(), dx.as<float>(), B, N, C, 0);
      return download<T>(info.Env(), dout, (size_t)B * C);
    });
  });
}

// convert(x, precision) -> Float32Array: x rounded to the precision on the device.
Napi::Value Convert(const Napi::CallbackInfo& info) {
  auto x = typedArrayArg<float>(info[0], "x");
  const Precision p = precisionArg(info[1]);
  return guarded(info, [&] {
    return withPrecision(p, [&](auto tag) -> Napi::Value {
      using T = decltype(tag);
      DeviceBuffer d = uploadAs<T>(x.Data(), x.ElementLength());
      return download<T>(info.Env(), d, x.ElementLength());
    });
  });
}

}  // namespace

Napi::Object DefineCudaOps(Napi::Env env) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("layerNorm", Napi::Function::New<LayerNorm>(env, "layerNorm"));
  o.Set("linear", Napi::Function::New<Linear>(env, "linear"));
  o.Set("attention", Napi::Function::New<Attention>(env, "attention"));
  o.Set("topkGatherFuse", Napi::Function::New<TopkGatherFuse>(env, "topkGatherFuse"));
  o.Set("patchify", Napi::Function::New<Patchify>(env, "patchify"));
  o.Set("assembleTokens", Napi::Function::New<AssembleTokens>(env, "assembleTokens"));
  o.Set("convert", Napi::Function::New<Convert>(env, "convert"));
  o.Set("conv2d", Napi::Function::New<Conv2d>(env, "conv2d"));
  o.Set("depthwise3x3", Napi::Function::New<Depthwise3x3>(env, "depthwise3x3"));
  o.Set("groupAttention", Napi::Function::New<GroupAttention>(env, "groupAttention"));
  o.Set("meanTokens", Napi::Function::New<MeanTokens>(env, "meanTokens"));
  return o;
}

}  // namespace evit
