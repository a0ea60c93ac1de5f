// binding.testing.ops: each CPU op of the forward pass on its own, synchronously, so tests can
// check it against a naive reference and the microbenchmarks can time it.
#include <algorithm>
#include <climits>
#include <cstring>
#include <string>
#include <vector>

#include "../binding/napi_args.h"
#include "../cpu/ops.h"
#include "fma_peak.h"
#include "testing_exports.h"

namespace evit {

namespace {

constexpr int kMaxDim = 1 << 20;

Napi::Float32Array copyOf(Napi::Env env, const float* p, size_t n) {
  auto a = Napi::Float32Array::New(env, n);
  if (n) std::memcpy(a.Data(), p, n * sizeof(float));
  return a;
}

// layerNorm(x, rows, C, w, b, eps)
Napi::Value LayerNorm(const Napi::CallbackInfo& info) {
  const int rows = intArg(info[1], "rows", 1, kMaxDim), C = intArg(info[2], "C", 1, kMaxDim);
  auto x = typedArrayArg<float>(info[0], "x", (int64_t)rows * C);
  auto w = typedArrayArg<float>(info[3], "w", C);
  auto b = typedArrayArg<float>(info[4], "b", C);
  if (!info[5].IsNumber() || !(info[5].As<Napi::Number>().DoubleValue() >= 0))
    throw typeError(info.Env(), "eps must be a non-negative number");
  const float eps = info[5].As<Napi::Number>().FloatValue();
  std::vector<float> out((size_t)rows * C);
  cpu::layerNorm(out.data(), x.Data(), C, w.Data(), b.Data(), rows, C, eps);
  return copyOf(info.Env(), out.data(), out.size());
}

// linear(x, M, K, W, b, N, epilogue: 'bias' | 'gelu' | 'residual', residual?)
Napi::Value Linear(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int M = intArg(info[1], "M", 1, kMaxDim), K = intArg(info[2], "K", 1, kMaxDim),
            N = intArg(info[5], "N", 1, kMaxDim);
  auto x = typedArrayArg<float>(info[0], "x", (int64_t)M * K);
  auto W = typedArrayArg<float>(info[3], "W", (int64_t)N * K);
  auto b = typedArrayArg<float>(info[4], "b", N);
  const std::string ep = info[6].ToString().Utf8Value();
  std::vector<float> out((size_t)M * N, 0.0f);
  cpu::Epilogue e;
  if (ep == "bias") {
    e = cpu::Epilogue::Bias;
  } else if (ep == "gelu") {
    e = cpu::Epilogue::BiasGelu;
  } else if (ep == "residual") {
    e = cpu::Epilogue::BiasResidual;
    auto r = typedArrayArg<float>(info[7], "residual", (int64_t)M * N);
    std::memcpy(out.data(), r.Data(), out.size() * sizeof(float));
  } else {
    throw rangeError(env, "epilogue must be 'bias', 'gelu' or 'residual'");
  }
  cpu::linear(out.data(), x.Data(), W.Data(), b.Data(), M, N, K, e);
  return copyOf(env, out.data(), out.size());
}

// attention(qkv, B, N, heads, headDim, withScores) -> { out, scores? }
Napi::Value Attention(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int B = intArg(info[1], "B", 1, 65536), N = intArg(info[2], "N", 2, 65536),
            H = intArg(info[3], "heads", 1, 4096), d = intArg(info[4], "headDim", 1, 4096);
  auto qkv = typedArrayArg<float>(info[0], "qkv", (int64_t)B * N * 3 * H * d);
  const bool withScores = info[5].ToBoolean();
  std::vector<float> out((size_t)B * N * H * d), scores(withScores ? (size_t)B * (N - 1) : 0);
  cpu::clsAttention(out.data(), withScores ? scores.data() : nullptr, qkv.Data(), B, N, H, d);
  Napi::Object res = Napi::Object::New(env);
  res.Set("out", copyOf(env, out.data(), out.size()));
  if (withScores) res.Set("scores", copyOf(env, scores.data(), scores.size()));
  return res;
}

// topk(scores, B, M, k) -> Int32Array [B, k]
Napi::Value TopK(const Napi::CallbackInfo& info) {
  const int B = intArg(info[1], "B", 1, kMaxDim), M = intArg(info[2], "M", 1, kMaxDim);
  const int k = intArg(info[3], "k", 1, M);
  auto s = typedArrayArg<float>(info[0], "scores", (int64_t)B * M);
  auto idx = Napi::Int32Array::New(info.Env(), (size_t)B * k);
  cpu::topk(idx.Data(), s.Data(), B, M, k);
  return idx;
}

// gatherFuse(x, B, N, C, scores, idx, k, fuse) -> { out, origins }
Napi::Value GatherFuse(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int B = intArg(info[1], "B", 1, 65536), N = intArg(info[2], "N", 2, kMaxDim), C = intArg(info[3], "C", 1, kMaxDim);
  const int k = intArg(info[6], "k", 1, N - 1);
  auto x = typedArrayArg<float>(info[0], "x", (int64_t)B * N * C);
  auto s = typedArrayArg<float>(info[4], "scores", (int64_t)B * (N - 1));
  auto idx = typedArrayArg<int32_t>(info[5], "idx", (int64_t)B * k);
  const bool fuse = info[7].ToBoolean();
  // Every index must name a distinct token of its row: the kernel trusts this.
  std::vector<char> seen(N - 1);
  for (int b = 0; b < B; ++b) {
    std::fill(seen.begin(), seen.end(), 0);
    for (int i = 0; i < k; ++i) {
      const int j = idx[(size_t)b * k + i];
      if (j < 0 || j >= N - 1)
        throw rangeError(env, "idx[" + std::to_string(b * k + i) + "] = " + std::to_string(j) + " is out of range [0, " +
                                  std::to_string(N - 1) + ")");
      if (seen[j]) throw rangeError(env, "idx repeats token " + std::to_string(j) + " in row " + std::to_string(b));
      seen[j] = 1;
    }
  }
  const int outN = 1 + k + (fuse ? 1 : 0);
  std::vector<float> out((size_t)B * outN * C);
  auto origins = Napi::Int32Array::New(env, (size_t)B * (outN - 1));
  cpu::gatherFuse(out.data(), origins.Data(), x.Data(), s.Data(), idx.Data(), nullptr, B, N, C, k, fuse, -1);
  Napi::Object res = Napi::Object::New(env);
  res.Set("out", copyOf(env, out.data(), out.size()));
  res.Set("origins", origins);
  return res;
}

// patchEmbed(img, B, inChans, gh, gw, p, W, b, cls, pos, C)
Napi::Value PatchEmbed(const Napi::CallbackInfo& info) {
  const int B = intArg(info[1], "B", 1, 65536), ic = intArg(info[2], "inChans", 1, 64),
            gh = intArg(info[3], "gh", 1, 4096), gw = intArg(info[4], "gw", 1, 4096), p = intArg(info[5], "p", 1, 1024),
            C = intArg(info[10], "C", 1, kMaxDim);
  const int64_t P = (int64_t)gh * gw;
  auto img = typedArrayArg<float>(info[0], "img", (int64_t)B * ic * gh * p * gw * p);
  auto W = typedArrayArg<float>(info[6], "W", (int64_t)C * ic * p * p);
  auto b = typedArrayArg<float>(info[7], "b", C);
  auto cls = typedArrayArg<float>(info[8], "cls", C);
  auto pos = typedArrayArg<float>(info[9], "pos", (1 + P) * C);
  const int K = ic * p * p;
  std::vector<float> x((size_t)B * (1 + P) * C), cols((size_t)B * P * K), patches((size_t)B * P * C);
  cpu::patchify(cols.data(), img.Data(), B, ic, gh, gw, p);
  cpu::linear(patches.data(), cols.data(), W.Data(), b.Data(), (int)(B * P), C, K, cpu::Epilogue::Bias);
  cpu::assembleTokens(x.data(), patches.data(), cls.Data(), pos.Data(), B, (int)P, C);
  return copyOf(info.Env(), x.data(), x.size());
}

Napi::Value Gelu(const Napi::CallbackInfo& info) {
  auto x = typedArrayArg<float>(info[0], "x");
  std::vector<float> out(x.Data(), x.Data() + x.ElementLength());
  cpu::gelu(out.data(), (long)out.size());
  return copyOf(info.Env(), out.data(), out.size());
}

// The start of a row-strided view (testing_exports.h), its stride in *ldOut.
const float* span(const Napi::TypedArrayOf<float>& a, const Napi::Value& offset, const Napi::Value& ld, int64_t rows,
                  int width, const std::string& what, long* ldOut) {
  const RowView v = rowView(a, offset, ld, rows, width, what);
  *ldOut = v.stride;
  return a.Data() + v.offset;
}

// conv2d(x, layout: 'nchw' | 'nhwc', W [Cout, Cin, k, k], b, B, H, W, Cin, Cout, k, stride, pad,
// epilogue: 'bias' | 'relu') -> [B, Ho, Wo, Cout]
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
  const std::string ep = info[12].ToString().Utf8Value();
  if (ep != "bias" && ep != "relu") throw rangeError(env, "epilogue must be 'bias' or 'relu'");
  const int Ho = (H + 2 * pad - k) / stride + 1, Wo = (Wd + 2 * pad - k) / stride + 1;
  std::vector<float> Wp((size_t)Cout * Cin * k * k), out((size_t)B * Ho * Wo * Cout);
  cpu::convWeightToHwc(Wp.data(), W.Data(), Cout, Cin, k);
  cpu::conv2d(out.data(), x.Data(), layout == "nchw" ? cpu::ImageLayout::NCHW : cpu::ImageLayout::NHWC, Wp.data(),
              b.Data(), B, H, Wd, Cin, Cout, k, stride, pad, ep == "relu" ? cpu::Epilogue::BiasRelu : cpu::Epilogue::Bias);
  return copyOf(env, out.data(), out.size());
}

// depthwise3x3(x, xOffset, ldx, add | null, addOffset, ldAdd, W [C, 1, 3, 3], b, B, H, W, C, gelu,
// inPlace) -> [B·H·W, C]. inPlace: the output is written over (a copy of) add, which must then be
// contiguous, as the forward pass does for o + local_conv(v).
Napi::Value Depthwise3x3(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int B = intArg(info[8], "B", 1, 4096), H = intArg(info[9], "H", 1, 4096), Wd = intArg(info[10], "W", 1, 4096),
            C = intArg(info[11], "C", 1, kMaxDim);
  const int64_t pixels = (int64_t)B * H * Wd;
  long ldx = 0, ldAdd = 0;
  auto xa = typedArrayArg<float>(info[0], "x");
  const float* x = span(xa, info[1], info[2], pixels, C, "x", &ldx);
  const float* add = nullptr;
  if (!info[3].IsNull() && !info[3].IsUndefined()) {
    auto aa = typedArrayArg<float>(info[3], "add");
    add = span(aa, info[4], info[5], pixels, C, "add", &ldAdd);
  }
  auto W = typedArrayArg<float>(info[6], "W", (int64_t)C * 9);
  auto b = typedArrayArg<float>(info[7], "b", C);
  const bool gelu = info[12].ToBoolean(), inPlace = info[13].ToBoolean();
  std::vector<float> Wt((size_t)C * 9), out((size_t)pixels * C);
  cpu::depthwiseWeightToTaps(Wt.data(), W.Data(), C);
  if (inPlace) {
    if (!add || ldAdd != C) throw rangeError(env, "inPlace needs a contiguous add (row stride C)");
    std::copy(add, add + out.size(), out.begin());
    add = out.data();
  }
  cpu::depthwise3x3(out.data(), x, ldx, add, ldAdd, Wt.data(), b.Data(), B, H, Wd, C, gelu);
  return copyOf(env, out.data(), out.size());
}

// groupAttention(out, oOffset, ldo, q, qOffset, ldq, k, kOffset, ldk, v, vOffset, ldv, B, N, M,
// heads, headDim) -> a copy of out with the attention written into its heads' channels.
Napi::Value GroupAttention(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int B = intArg(info[12], "B", 1, 4096), N = intArg(info[13], "N", 1, 65536), M = intArg(info[14], "M", 1, 65536),
            heads = intArg(info[15], "heads", 1, 4096), d = intArg(info[16], "headDim", 1, 4096);
  const int width = heads * d;
  long ldo = 0, ldq = 0, ldk = 0, ldv = 0;
  auto oa = typedArrayArg<float>(info[0], "out");
  std::vector<float> out(oa.Data(), oa.Data() + oa.ElementLength());
  const size_t oOff = span(oa, info[1], info[2], (int64_t)B * N, width, "out", &ldo) - oa.Data();
  auto qa = typedArrayArg<float>(info[3], "q");
  const float* q = span(qa, info[4], info[5], (int64_t)B * N, width, "q", &ldq);
  auto ka = typedArrayArg<float>(info[6], "k");
  const float* k = span(ka, info[7], info[8], (int64_t)B * M, width, "k", &ldk);
  auto va = typedArrayArg<float>(info[9], "v");
  const float* v = span(va, info[10], info[11], (int64_t)B * M, width, "v", &ldv);
  cpu::groupAttention(out.data() + oOff, ldo, q, ldq, k, ldk, v, ldv, B, N, M, heads, d);
  return copyOf(env, out.data(), out.size());
}

// meanTokens(x, B, N, C) -> [B, C]
Napi::Value MeanTokens(const Napi::CallbackInfo& info) {
  const int B = intArg(info[1], "B", 1, 65536), N = intArg(info[2], "N", 1, kMaxDim), C = intArg(info[3], "C", 1, kMaxDim);
  auto x = typedArrayArg<float>(info[0], "x", (int64_t)B * N * C);
  std::vector<float> out((size_t)B * C);
  cpu::meanTokens(out.data(), x.Data(), B, N, C);
  return copyOf(info.Env(), out.data(), out.size());
}

Napi::Value MeasureFmaPeak(const Napi::CallbackInfo& info) {
  const int threads = intArg(info[0], "threads", 1, 1024);
  if (!info[1].IsNumber()) throw typeError(info.Env(), "seconds must be a number");
  const double seconds = info[1].As<Napi::Number>().DoubleValue();
  if (!(seconds > 0 && seconds <= 60)) throw rangeError(info.Env(), "seconds must be in (0, 60]");
  cpu::FmaWidth width = cpu::FmaWidth::Widest;
  if (info.Length() > 2 && !info[2].IsUndefined()) {
    const std::string w = info[2].ToString().Utf8Value();
    if (w == "avx2") width = cpu::FmaWidth::Avx2;
    else if (w == "avx512") width = cpu::FmaWidth::Avx512;
    else if (w != "widest") throw rangeError(info.Env(), "width must be 'widest', 'avx2' or 'avx512'");
  }
  return Napi::Number::New(info.Env(), cpu::measureFmaPeak(threads, seconds, width));
}

}  // namespace

Napi::Object DefineOps(Napi::Env env) {
  Napi::Object ops = Napi::Object::New(env);
  ops.Set("layerNorm", Napi::Function::New<LayerNorm>(env, "layerNorm"));
  ops.Set("linear", Napi::Function::New<Linear>(env, "linear"));
  ops.Set("attention", Napi::Function::New<Attention>(env, "attention"));
  ops.Set("topk", Napi::Function::New<TopK>(env, "topk"));
  ops.Set("gatherFuse", Napi::Function::New<GatherFuse>(env, "gatherFuse"));
  ops.Set("patchEmbed", Napi::Function::New<PatchEmbed>(env, "patchEmbed"));
  ops.Set("gelu", Napi::Function::New<Gelu>(env, "gelu"));
  ops.Set("conv2d", Napi::Function::New<Conv2d>(env, "conv2d"));
  ops.Set("depthwise3x3", Napi::Function::New<Depthwise3x3>(env, "depthwise3x3"));
  ops.Set("groupAttention", Napi::Function::New<GroupAttention>(env, "groupAttention"));
  ops.Set("meanTokens", Napi::Function::New<MeanTokens>(env, "meanTokens"));
  ops.Set("measureFmaPeak", Napi::Function::New<MeasureFmaPeak>(env, "measureFmaPeak"));
  return ops;
}

}  // namespace evit
