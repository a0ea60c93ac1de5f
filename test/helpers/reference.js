'use strict';
// Plain float64 references for the single CPU ops, written as directly from their
// definitions as possible (nested loops, no blocking, no tricks), plus a seeded PRNG.
// Every reference also returns a per-element "scale": the float64 sum of the absolute
// values of the terms that make up that element, so tolerances can be stated as
// |got - ref| <= atol + rtol * scale (which equals a plain relative bound when the
// terms do not cancel).

/** mulberry32: a tiny deterministic 32-bit PRNG returning floats in [0, 1). */
function mulberry32(seed) {
  let a = seed >>> 0;
  return function next() {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Float32Array of n uniform values in [lo, hi). */
function uniform(rand, n, lo = -1, hi = 1) {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = lo + (hi - lo) * rand();
  return a;
}

const TWO_OVER_SQRT_PI = 1.1283791670955126;
const INV_SQRT_PI = 0.5641895835477563;

/**
 * erf in float64. |x| < 3: erf(x) = 2/√π · e^{-x²} · Σ_n 2^n x^{2n+1} / (1·3·…·(2n+1)),
 * a series of positive terms (no cancellation). |x| >= 3: erfc from its continued
 * fraction erfc(x) = e^{-x²}/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + 2/(x + …))))),
 * evaluated bottom-up with enough terms for full double precision.
 */
function erf(x) {
  if (Number.isNaN(x)) return NaN;
  const ax = Math.abs(x);
  if (ax < 3) {
    let term = ax;
    let sum = ax;
    for (let n = 1; n < 200; n++) {
      term *= (2 * ax * ax) / (2 * n + 1);
      sum += term;
      if (term < sum * 1e-17) break;
    }
    const r = TWO_OVER_SQRT_PI * Math.exp(-ax * ax) * sum;
    return x < 0 ? -r : r;
  }
  return x < 0 ? -(1 - erfcLarge(ax)) : 1 - erfcLarge(ax);
}

/** erfc(x) for x >= 3 by the continued fraction (exact enough: ~1e-16 relative). */
function erfcLarge(x) {
  if (x > 27) return 0;
  let f = x;
  for (let n = 120; n >= 1; n--) f = x + n / 2 / f;
  return (Math.exp(-x * x) * INV_SQRT_PI) / f;
}

/** erfc(x) = 1 - erf(x), without the cancellation for large positive x. */
function erfc(x) {
  if (x >= 3) return erfcLarge(x);
  return 1 - erf(x);
}

/** Exact-erf GELU: 0.5·x·(1 + erf(x/√2)), i.e. 0.5·x·erfc(-x/√2) (used for x < 0, where it is exact). */
function gelu(x) {
  if (x < 0) return 0.5 * x * erfc(-x / Math.SQRT2);
  return 0.5 * x * (1 + erf(x / Math.SQRT2));
}

/** Largest |gelu'(x)| over all x (at x = √2 it is Φ(√2) + √2·φ(√2) ≈ 1.1289), rounded up. */
const GELU_MAX_SLOPE = 1.13;

/** LayerNorm of rows of x [rows, C]: two-pass mean / biased variance in float64. */
function layerNorm(x, rows, C, w, b, eps) {
  const out = new Float64Array(rows * C);
  const scale = new Float64Array(rows * C);
  for (let r = 0; r < rows; r++) {
    let mean = 0;
    for (let c = 0; c < C; c++) mean += x[r * C + c];
    mean /= C;
    let v = 0;
    for (let c = 0; c < C; c++) v += (x[r * C + c] - mean) ** 2;
    v /= C;
    const inv = 1 / Math.sqrt(v + eps);
    for (let c = 0; c < C; c++) {
      const nrm = (x[r * C + c] - mean) * inv * w[c];
      out[r * C + c] = nrm + b[c];
      scale[r * C + c] = Math.abs(nrm) + Math.abs(b[c]);
    }
  }
  return { out, scale };
}

/** x [M, K] · W[N, K]ᵀ + b, then the epilogue ('bias' | 'gelu' | 'residual'). */
function linear(x, M, K, W, b, N, epilogue, residual) {
  const out = new Float64Array(M * N);
  const scale = new Float64Array(M * N);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let acc = b[n];
      let abs = Math.abs(b[n]);
      for (let k = 0; k < K; k++) {
        const term = x[m * K + k] * W[n * K + k];
        acc += term;
        abs += Math.abs(term);
      }
      if (epilogue === 'gelu') {
        out[m * N + n] = gelu(acc);
        scale[m * N + n] = GELU_MAX_SLOPE * abs;
      } else if (epilogue === 'residual') {
        out[m * N + n] = residual[m * N + n] + acc;
        scale[m * N + n] = Math.abs(residual[m * N + n]) + abs;
      } else {
        out[m * N + n] = acc;
        scale[m * N + n] = abs;
      }
    }
  }
  return { out, scale };
}

/**
 * Multi-head attention over qkv [B, N, 3C] (q | k | v; head h at columns h*d..h*d+d-1 of
 * each part). Returns out [B, N, C], the probabilities probs[b][h][i][j], and the
 * class-token scores [B, N-1]: mean over heads of probs[b][h][0][j+1].
 */
function attention(qkv, B, N, H, d) {
  const C = H * d;
  const ld = 3 * C;
  const out = new Float64Array(B * N * C);
  const scale = new Float64Array(B * N * C);
  const scores = new Float64Array(B * (N - 1));
  const probs = [];
  for (let b = 0; b < B; b++) {
    const pb = [];
    for (let h = 0; h < H; h++) {
      const ph = [];
      for (let i = 0; i < N; i++) {
        const logits = new Float64Array(N);
        for (let j = 0; j < N; j++) {
          let dot = 0;
          for (let e = 0; e < d; e++) dot += qkv[(b * N + i) * ld + h * d + e] * qkv[(b * N + j) * ld + C + h * d + e];
          logits[j] = dot / Math.sqrt(d);
        }
        let mx = -Infinity;
        for (let j = 0; j < N; j++) mx = Math.max(mx, logits[j]);
        let sum = 0;
        const p = new Float64Array(N);
        for (let j = 0; j < N; j++) {
          p[j] = Math.exp(logits[j] - mx);
          sum += p[j];
        }
        for (let j = 0; j < N; j++) p[j] /= sum;
        ph.push(p);
        for (let e = 0; e < d; e++) {
          let acc = 0;
          let abs = 0;
          for (let j = 0; j < N; j++) {
            const term = p[j] * qkv[(b * N + j) * ld + 2 * C + h * d + e];
            acc += term;
            abs += Math.abs(term);
          }
          out[(b * N + i) * C + h * d + e] = acc;
          scale[(b * N + i) * C + h * d + e] = abs;
        }
      }
      pb.push(ph);
    }
    for (let j = 0; j < N - 1; j++) {
      let s = 0;
      for (let h = 0; h < H; h++) s += pb[h][0][j + 1];
      scores[b * (N - 1) + j] = s / H;
    }
    probs.push(pb);
  }
  return { out, scale, scores, probs };
}

/** Indices of the k largest of each row of scores [B, M]: descending, ties to the lower index, NaN last. */
function topk(scores, B, M, k) {
  const idx = [];
  for (let b = 0; b < B; b++) {
    const order = [];
    for (let j = 0; j < M; j++) order.push(j);
    const s = (j) => scores[b * M + j];
    order.sort((a, c) => {
      const na = Number.isNaN(s(a));
      const nc = Number.isNaN(s(c));
      if (na !== nc) return na ? 1 : -1;
      if (!na && s(a) !== s(c)) return s(a) > s(c) ? -1 : 1;
      return a - c;
    });
    idx.push(...order.slice(0, k));
  }
  return idx;
}

/**
 * [cls, x[1 + idx]…, fused?] from x [B, N, C], scores [B, N-1], idx [B, k]; the fused token is
 * Σ_{j∉idx} s[j]·x[1+j] with the raw scores. origins: idx, then -1 for the fused token.
 */
function gatherFuse(x, B, N, C, scores, idx, k, fuse) {
  const outN = 1 + k + (fuse ? 1 : 0);
  const out = new Float64Array(B * outN * C);
  const scale = new Float64Array(B * outN * C);
  const origins = [];
  for (let b = 0; b < B; b++) {
    const base = b * outN * C;
    for (let c = 0; c < C; c++) out[base + c] = x[b * N * C + c];
    const kept = new Set();
    for (let i = 0; i < k; i++) {
      const j = idx[b * k + i];
      kept.add(j);
      origins.push(j);
      for (let c = 0; c < C; c++) out[base + (1 + i) * C + c] = x[(b * N + 1 + j) * C + c];
    }
    if (fuse) {
      origins.push(-1);
      for (let c = 0; c < C; c++) {
        let acc = 0;
        let abs = 0;
        for (let j = 0; j < N - 1; j++) {
          if (kept.has(j)) continue;
          const term = scores[b * (N - 1) + j] * x[(b * N + 1 + j) * C + c];
          acc += term;
          abs += Math.abs(term);
        }
        out[base + (1 + k) * C + c] = acc;
        scale[base + (1 + k) * C + c] = abs;
      }
    }
    for (let i = 0; i < (1 + k) * C; i++) scale[base + i] = Math.abs(out[base + i]);
  }
  return { out, scale, origins };
}

/**
 * A stride-p convolution over img [B, ic, gh*p, gw*p] with W [C, ic, p, p] and bias b, as
 * tokens [B, 1 + gh*gw, C] (row-major patch order), plus pos; token 0 is cls + pos[0].
 */
function patchEmbed(img, B, ic, gh, gw, p, W, bias, cls, pos, C) {
  const P = gh * gw;
  const H = gh * p;
  const Wd = gw * p;
  const out = new Float64Array(B * (1 + P) * C);
  const scale = new Float64Array(B * (1 + P) * C);
  for (let b = 0; b < B; b++) {
    for (let c = 0; c < C; c++) {
      out[b * (1 + P) * C + c] = cls[c] + pos[c];
      scale[b * (1 + P) * C + c] = Math.abs(cls[c]) + Math.abs(pos[c]);
    }
    for (let gy = 0; gy < gh; gy++) {
      for (let gx = 0; gx < gw; gx++) {
        const t = 1 + gy * gw + gx;
        for (let c = 0; c < C; c++) {
          let acc = bias[c] + pos[t * C + c];
          let abs = Math.abs(bias[c]) + Math.abs(pos[t * C + c]);
          for (let ci = 0; ci < ic; ci++) {
            for (let ky = 0; ky < p; ky++) {
              for (let kx = 0; kx < p; kx++) {
                const pix = img[((b * ic + ci) * H + gy * p + ky) * Wd + gx * p + kx];
                const term = W[((c * ic + ci) * p + ky) * p + kx] * pix;
                acc += term;
                abs += Math.abs(term);
              }
            }
          }
          out[(b * (1 + P) + t) * C + c] = acc;
          scale[(b * (1 + P) + t) * C + c] = abs;
        }
      }
    }
  }
  return { out, scale };
}

/**
 * Worst violation of |got[i] - ref[i]| <= atol + rtol * scale[i] (scale defaults to |ref|).
 * Returns { ok, worst, at, got, want, tol, maxErr } for a readable assertion message.
 */
function compare(got, ref, scale, atol, rtol) {
  if (got.length !== ref.length) return { ok: false, lengthMismatch: true, gotLength: got.length, refLength: ref.length };
  let worst = -Infinity;
  let at = -1;
  let maxErr = 0;
  for (let i = 0; i < ref.length; i++) {
    const s = scale ? scale[i] : Math.abs(ref[i]);
    const tol = atol + rtol * s;
    const err = Math.abs(got[i] - ref[i]);
    const excess = Number.isNaN(err) ? Infinity : err / tol;
    if (!Number.isNaN(err)) maxErr = Math.max(maxErr, err);
    if (excess > worst) {
      worst = excess;
      at = i;
    }
  }
  const i = at;
  return {
    ok: ref.length === 0 || worst <= 1,
    worst,
    at: i,
    got: got[i],
    want: ref[i],
    tol: i >= 0 ? atol + rtol * (scale ? scale[i] : Math.abs(ref[i])) : 0,
    maxErr,
  };
}

module.exports = { mulberry32, uniform, erf, erfc, gelu, GELU_MAX_SLOPE, layerNorm, linear, attention, topk, gatherFuse, patchEmbed, compare };
