// Float64 references for the kernel tests, written from the ops' definitions (nested loops,
// no tiling), each returning a per-element scale (the sum of |terms|) so tolerances read
// |got - want| <= atol + rtol · scale; and a round-to-nearest-even by search for the 16-bit
// formats, independent of the emulator's conversion code.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace reference {

struct Result {
  std::vector<double> out, scale;
};

inline double gelu(double x) { return 0.5 * x * std::erfc(-x / std::sqrt(2.0)); }
constexpr double kGeluMaxSlope = 1.13;  // max |gelu'(x)|, at x = √2: Φ(√2) + √2·φ(√2) ≈ 1.1289

inline Result layerNorm(const std::vector<float>& x, long rowStride, int rows, int C, const std::vector<float>& w,
                        const std::vector<float>& b, double eps) {
  Result r{std::vector<double>((size_t)rows * C), std::vector<double>((size_t)rows * C)};
  for (int i = 0; i < rows; ++i) {
    const float* xr = x.data() + (size_t)i * rowStride;
    double mean = 0, var = 0;
    for (int c = 0; c < C; ++c) mean += xr[c];
    mean /= C;
    for (int c = 0; c < C; ++c) var += (xr[c] - mean) * (xr[c] - mean);
    const double inv = 1.0 / std::sqrt(var / C + eps);
    for (int c = 0; c < C; ++c) {
      const double n = (xr[c] - mean) * inv * w[c];
      r.out[(size_t)i * C + c] = n + b[c];
      r.scale[(size_t)i * C + c] = std::fabs(n) + std::fabs(b[c]);
    }
  }
  return r;
}

enum class Ep { Bias, Gelu, Residual, Float, Relu };

inline Result linear(const std::vector<double>& x, int M, int K, const std::vector<double>& W,
                     const std::vector<float>& b, int N, Ep ep, const std::vector<float>& residual) {
  Result r{std::vector<double>((size_t)M * N), std::vector<double>((size_t)M * N)};
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) {
      double acc = b[n], abs = std::fabs(b[n]);
      for (int k = 0; k < K; ++k) {
        const double t = x[(size_t)m * K + k] * W[(size_t)n * K + k];
        acc += t;
        abs += std::fabs(t);
      }
      const size_t i = (size_t)m * N + n;
      if (ep == Ep::Gelu) {
        r.out[i] = gelu(acc);
        r.scale[i] = kGeluMaxSlope * abs;
      } else if (ep == Ep::Relu) {
        r.out[i] = acc < 0 ? 0 : acc;
        r.scale[i] = abs;
      } else if (ep == Ep::Residual) {
        r.out[i] = residual[i] + acc;
        r.scale[i] = std::fabs(residual[i]) + abs;
      } else {
        r.out[i] = acc;
        r.scale[i] = abs;
      }
    }
  return r;
}

// qkv [B, N, 3C] (q | k | v, head h at columns h·d ..): out [B, N, C]; probs [B, H, N] = row 0.
struct Attention {
  Result out;
  std::vector<double> probs;
};
inline Attention attention(const std::vector<double>& qkv, int B, int N, int H, int d) {
  const int C = H * d;
  const size_t ld = 3 * (size_t)C;
  Attention a{{std::vector<double>((size_t)B * N * C), std::vector<double>((size_t)B * N * C)},
              std::vector<double>((size_t)B * H * N)};
  std::vector<double> p(N);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h)
      for (int i = 0; i < N; ++i) {
        double mx = -INFINITY, sum = 0;
        for (int j = 0; j < N; ++j) {
          double dot = 0;
          for (int e = 0; e < d; ++e)
            dot += qkv[((size_t)b * N + i) * ld + h * d + e] * qkv[((size_t)b * N + j) * ld + C + h * d + e];
          p[j] = dot / std::sqrt((double)d);
          mx = std::max(mx, p[j]);
        }
        for (int j = 0; j < N; ++j) sum += (p[j] = std::exp(p[j] - mx));
        for (int j = 0; j < N; ++j) p[j] /= sum;
        if (i == 0)
          for (int j = 0; j < N; ++j) a.probs[((size_t)b * H + h) * N + j] = p[j];
        for (int e = 0; e < d; ++e) {
          double acc = 0, abs = 0;
          for (int j = 0; j < N; ++j) {
            const double t = p[j] * qkv[((size_t)b * N + j) * ld + 2 * C + h * d + e];
            acc += t;
            abs += std::fabs(t);
          }
          a.out.out[((size_t)b * N + i) * C + h * d + e] = acc;
          a.out.scale[((size_t)b * N + i) * C + h * d + e] = abs;
        }
      }
  return a;
}

// N queries against M keys, each operand at its own row stride (groupAttention's layout): q row
// i of image b at q[(b·N + i)·ldq + h·d ..], k and v row j at [(b·M + j)·ld + h·d ..]. out
// [B, N, H·d] (heads side by side, packed); probs [B, H, M] = each head's softmax row 0.
inline Attention groupAttention(const std::vector<double>& q, long ldq, const std::vector<double>& k, long ldk,
                                const std::vector<double>& v, long ldv, int B, int N, int M, int H, int d) {
  const size_t C = (size_t)H * d;
  Attention a{{std::vector<double>((size_t)B * N * C), std::vector<double>((size_t)B * N * C)},
              std::vector<double>((size_t)B * H * M)};
  std::vector<double> p(M);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h)
      for (int i = 0; i < N; ++i) {
        double mx = -INFINITY, sum = 0;
        for (int j = 0; j < M; ++j) {
          double dot = 0;
          for (int e = 0; e < d; ++e)
            dot += q[((size_t)b * N + i) * ldq + h * d + e] * k[((size_t)b * M + j) * ldk + h * d + e];
          p[j] = dot / std::sqrt((double)d);
          mx = std::max(mx, p[j]);
        }
        for (int j = 0; j < M; ++j) sum += (p[j] = std::exp(p[j] - mx));
        for (int j = 0; j < M; ++j) p[j] /= sum;
        if (i == 0)
          for (int j = 0; j < M; ++j) a.probs[((size_t)b * H + h) * M + j] = p[j];
        for (int e = 0; e < d; ++e) {
          double acc = 0, abs = 0;
          for (int j = 0; j < M; ++j) {
            const double t = p[j] * v[((size_t)b * M + j) * ldv + h * d + e];
            acc += t;
            abs += std::fabs(t);
          }
          a.out.out[((size_t)b * N + i) * C + h * d + e] = acc;
          a.out.scale[((size_t)b * N + i) * C + h * d + e] = abs;
        }
      }
  return a;
}

// LayerNorm then exact-erf GELU (the norm of shunted attention's sr branch).
inline Result layerNormGelu(const std::vector<float>& x, long rowStride, int rows, int C, const std::vector<float>& w,
                            const std::vector<float>& b, double eps) {
  Result r = layerNorm(x, rowStride, rows, C, w, b, eps);
  for (size_t i = 0; i < r.out.size(); ++i) {
    r.out[i] = gelu(r.out[i]);
    r.scale[i] *= kGeluMaxSlope;
  }
  return r;
}

// out [B, Ho, Wo, Cout] (NHWC) = conv(x, W) + b (ReLU'd with relu), W [Cout, Cin, k, k] in torch
// layout, x [B, Cin, H, W] (nchw) or [B, H, W, Cin], zero padding, the direct sum over every tap.
inline Result conv2d(const std::vector<double>& x, bool nchw, const std::vector<double>& W, const std::vector<float>& b,
                     int B, int H, int Wd, int Cin, int Cout, int k, int stride, int pad, bool relu) {
  const int Ho = (H + 2 * pad - k) / stride + 1, Wo = (Wd + 2 * pad - k) / stride + 1;
  Result r{std::vector<double>((size_t)B * Ho * Wo * Cout), std::vector<double>((size_t)B * Ho * Wo * Cout)};
  for (int bi = 0; bi < B; ++bi)
    for (int oy = 0; oy < Ho; ++oy)
      for (int ox = 0; ox < Wo; ++ox)
        for (int o = 0; o < Cout; ++o) {
          double acc = b[o], abs = std::fabs(b[o]);
          for (int c = 0; c < Cin; ++c)
            for (int ky = 0; ky < k; ++ky)
              for (int kx = 0; kx < k; ++kx) {
                const int iy = oy * stride - pad + ky, ix = ox * stride - pad + kx;
                if (iy < 0 || iy >= H || ix < 0 || ix >= Wd) continue;
                const double xv = nchw ? x[(((size_t)bi * Cin + c) * H + iy) * Wd + ix]
                                       : x[(((size_t)bi * H + iy) * Wd + ix) * Cin + c];
                const double t = W[(((size_t)o * Cin + c) * k + ky) * k + kx] * xv;
                acc += t;
                abs += std::fabs(t);
              }
          const size_t i = (((size_t)bi * Ho + oy) * Wo + ox) * Cout + o;
          r.out[i] = relu && acc < 0 ? 0 : acc;
          r.scale[i] = abs;
        }
  return r;
}

// out [B·H·W, C] = add + b + dw3x3(x) (+ GELU), W [C, 1, 3, 3] torch layout; pixel p of x at
// x[xOff + p·ldx], of add at add[addOff + p·ldAdd] (add null: none).
inline Result depthwise3x3(const std::vector<double>& x, long xOff, long ldx, const std::vector<double>* add,
                           long addOff, long ldAdd, const std::vector<double>& W, const std::vector<float>& b, int B,
                           int H, int Wd, int C, bool gelu) {
  Result r{std::vector<double>((size_t)B * H * Wd * C), std::vector<double>((size_t)B * H * Wd * C)};
  for (int bi = 0; bi < B; ++bi)
    for (int y = 0; y < H; ++y)
      for (int xx = 0; xx < Wd; ++xx)
        for (int c = 0; c < C; ++c) {
          const size_t p = ((size_t)bi * H + y) * Wd + xx;
          double acc = b[c], abs = std::fabs(b[c]);
          for (int dy = -1; dy <= 1; ++dy)
            for (int dx = -1; dx <= 1; ++dx) {
              if (y + dy < 0 || y + dy >= H || xx + dx < 0 || xx + dx >= Wd) continue;
              const size_t q = ((size_t)bi * H + y + dy) * Wd + xx + dx;
              const double t = W[(size_t)c * 9 + (dy + 1) * 3 + dx + 1] * x[xOff + q * ldx + c];
              acc += t;
              abs += std::fabs(t);
            }
          if (add) {
            acc += (*add)[addOff + p * ldAdd + c];
            abs += std::fabs((*add)[addOff + p * ldAdd + c]);
          }
          r.out[p * C + c] = gelu ? reference::gelu(acc) : acc;
          r.scale[p * C + c] = gelu ? kGeluMaxSlope * abs : abs;
        }
  return r;
}

// out [B, C] = the mean of x [B, N, C] over N.
inline Result meanTokens(const std::vector<float>& x, int B, int N, int C) {
  Result r{std::vector<double>((size_t)B * C), std::vector<double>((size_t)B * C)};
  for (int bi = 0; bi < B; ++bi)
    for (int c = 0; c < C; ++c) {
      double acc = 0, abs = 0;
      for (int n = 0; n < N; ++n) {
        acc += x[((size_t)bi * N + n) * C + c];
        abs += std::fabs(x[((size_t)bi * N + n) * C + c]);
      }
      r.out[(size_t)bi * C + c] = acc / N;
      r.scale[(size_t)bi * C + c] = abs / N;
    }
  return r;
}

// The k best of scores [M]: descending, ties to the lower index, NaN below everything, -0 == +0.
inline std::vector<int> topk(const float* s, int M, int k) {
  std::vector<int> order(M);
  for (int j = 0; j < M; ++j) order[j] = j;
  std::stable_sort(order.begin(), order.end(), [&](int a, int c) {
    const bool na = std::isnan(s[a]), nc = std::isnan(s[c]);
    if (na != nc) return nc;
    if (na) return false;
    return s[a] > s[c];  // -0 > +0 is false both ways: a tie, kept in index order
  });
  order.resize(k);
  return order;
}

// Round-to-nearest-even by searching all finite values of the format.
struct Format {
  std::vector<std::pair<double, uint16_t>> values;
  double overflow = 0;
  uint16_t inf = 0;
};
template <class Decode>
Format format(Decode decode, uint16_t inf) {
  Format f;
  for (uint32_t bits = 0; bits < 0x8000; ++bits) {
    const float v = decode((uint16_t)bits);
    if (std::isfinite(v)) f.values.push_back({(double)v, (uint16_t)bits});
  }
  std::sort(f.values.begin(), f.values.end());
  const double max = f.values.back().first, prev = f.values[f.values.size() - 2].first;
  f.overflow = max + (max - prev) / 2;
  f.inf = inf;
  return f;
}
inline uint16_t roundBySearch(const Format& f, float x) {
  if (std::isnan(x)) return 0x7FFF;
  const uint16_t sign = std::signbit(x) ? 0x8000 : 0;
  const double a = std::fabs((double)x);
  if (a >= f.overflow) return sign | f.inf;
  auto hi = std::lower_bound(f.values.begin(), f.values.end(), std::make_pair(a, (uint16_t)0));
  if (hi == f.values.end()) return sign | f.values.back().second;
  if (hi->first == a) return sign | hi->second;
  auto lo = hi - 1;
  const double dl = a - lo->first, dh = hi->first - a;
  return sign | (dl < dh ? lo->second : dh < dl ? hi->second : (lo->second & 1) ? hi->second : lo->second);
}

// Worst violation of |got - want| <= atol + rtol · scale; NaN counts as a violation.
struct Comparison {
  bool ok = true;
  size_t at = 0;
  double got = 0, want = 0, maxErr = 0;
  std::string str() const {
    return ok ? "max |err| " + std::to_string(maxErr)
              : "worst at " + std::to_string(at) + ": got " + std::to_string(got) + ", want " + std::to_string(want);
  }
};
template <class G>
Comparison compare(const std::vector<G>& got, const std::vector<double>& want, const std::vector<double>* scale,
                   double atol, double rtol) {
  Comparison c;
  if (got.size() != want.size()) {
    c.ok = false;
    return c;
  }
  double worst = -1;
  for (size_t i = 0; i < got.size(); ++i) {
    const double g = (double)got[i], err = std::fabs(g - want[i]);
    const double tol = atol + rtol * (scale ? (*scale)[i] : std::fabs(want[i]));
    if (!(err <= tol) && (std::isnan(err) || err - tol > worst)) {
      worst = std::isnan(err) ? INFINITY : err - tol;
      c.ok = false;
      c.at = i;
      c.got = g;
      c.want = want[i];
    }
    if (err > c.maxErr) c.maxErr = err;
  }
  return c;
}

}  // namespace reference
