'use strict';
// Plain float64 references for the CPU ops of the convolutional families (Shunted
// Transformer), written from their definitions with nested loops, in torch's layouts (conv
// weights [Cout, Cin, k, k], depthwise [C, 1, 3, 3]). Like test/helpers/reference.js, each
// returns a per-element scale, the float64 sum of |terms|, for |got − ref| <= atol + rtol·scale.
const { gelu, GELU_MAX_SLOPE } = require('./reference');

/**
 * conv2d with zero padding and groups 1: x [B, Cin, H, W] ('nchw') or [B, H, W, Cin] ('nhwc'),
 * W [Cout, Cin, k, k], out [B, Ho, Wo, Cout] (NHWC); relu applies max(·, 0) after the bias.
 */
function conv2d(x, layout, W, b, B, H, Wd, Cin, Cout, k, stride, pad, relu = false) {
  const Ho = Math.floor((H + 2 * pad - k) / stride) + 1;
  const Wo = Math.floor((Wd + 2 * pad - k) / stride) + 1;
  const at = layout === 'nchw' ? (bi, c, y, xx) => x[((bi * Cin + c) * H + y) * Wd + xx] : (bi, c, y, xx) => x[((bi * H + y) * Wd + xx) * Cin + c];
  const out = new Float64Array(B * Ho * Wo * Cout);
  const scale = new Float64Array(out.length);
  for (let bi = 0; bi < B; bi++) {
    for (let oy = 0; oy < Ho; oy++) {
      for (let ox = 0; ox < Wo; ox++) {
        for (let o = 0; o < Cout; o++) {
          let acc = b[o];
          let abs = Math.abs(b[o]);
          for (let c = 0; c < Cin; c++) {
            for (let ky = 0; ky < k; ky++) {
              const iy = oy * stride - pad + ky;
              if (iy < 0 || iy >= H) continue;
              for (let kx = 0; kx < k; kx++) {
                const ix = ox * stride - pad + kx;
                if (ix < 0 || ix >= Wd) continue;
                const term = at(bi, c, iy, ix) * W[((o * Cin + c) * k + ky) * k + kx];
                acc += term;
                abs += Math.abs(term);
              }
            }
          }
          const i = ((bi * Ho + oy) * Wo + ox) * Cout + o;
          out[i] = relu ? Math.max(acc, 0) : acc;
          scale[i] = abs;
        }
      }
    }
  }
  return { out, scale, Ho, Wo };
}

/**
 * out[p] = add[p] + b + depthwise 3×3 (stride 1, padding 1) of x over each image's H×W grid,
 * then GELU when `withGelu`. Pixel p of x at x[xOffset + p·ldx ..], of add at add[addOffset + p·ldAdd ..];
 * add may be null. W [C, 1, 3, 3]. out [B·H·W, C].
 */
function depthwise3x3(x, xOffset, ldx, add, addOffset, ldAdd, W, b, B, H, Wd, C, withGelu = false) {
  const out = new Float64Array(B * H * Wd * C);
  const scale = new Float64Array(out.length);
  for (let bi = 0; bi < B; bi++) {
    for (let y = 0; y < H; y++) {
      for (let xx = 0; xx < Wd; xx++) {
        const p = (bi * H + y) * Wd + xx;
        for (let c = 0; c < C; c++) {
          let acc = b[c];
          let abs = Math.abs(b[c]);
          if (add) {
            acc += add[addOffset + p * ldAdd + c];
            abs += Math.abs(add[addOffset + p * ldAdd + c]);
          }
          for (let dy = -1; dy <= 1; dy++) {
            for (let dx = -1; dx <= 1; dx++) {
              const iy = y + dy;
              const ix = xx + dx;
              if (iy < 0 || iy >= H || ix < 0 || ix >= Wd) continue;
              const term = x[xOffset + ((bi * H + iy) * Wd + ix) * ldx + c] * W[c * 9 + (dy + 1) * 3 + (dx + 1)];
              acc += term;
              abs += Math.abs(term);
            }
          }
          out[p * C + c] = withGelu ? gelu(acc) : acc;
          scale[p * C + c] = withGelu ? GELU_MAX_SLOPE * abs : abs;
        }
      }
    }
  }
  return { out, scale };
}

/**
 * N queries against M keys per image, `heads` heads of d channels, softmax(q·kᵀ/√d)·v: query i
 * of image b, head h at q[qOffset + (b·N + i)·ldq + h·d ..], key/value j at k[kOffset + (b·M + j)·ldk + h·d ..]
 * (v likewise). Returns out [B·N, heads·d] and its scale.
 */
function groupAttention(q, qOffset, ldq, k, kOffset, ldk, v, vOffset, ldv, B, N, M, heads, d) {
  const width = heads * d;
  const out = new Float64Array(B * N * width);
  const scale = new Float64Array(out.length);
  for (let bi = 0; bi < B; bi++) {
    for (let h = 0; h < heads; h++) {
      for (let i = 0; i < N; i++) {
        const logits = new Float64Array(M);
        for (let j = 0; j < M; j++) {
          let dot = 0;
          for (let e = 0; e < d; e++) dot += q[qOffset + (bi * N + i) * ldq + h * d + e] * k[kOffset + (bi * M + j) * ldk + h * d + e];
          logits[j] = dot / Math.sqrt(d);
        }
        const mx = Math.max(...logits);
        const p = logits.map((l) => Math.exp(l - mx));
        const sum = p.reduce((a, e) => a + e, 0);
        for (let e = 0; e < d; e++) {
          let acc = 0;
          let abs = 0;
          for (let j = 0; j < M; j++) {
            const term = (p[j] / sum) * v[vOffset + (bi * M + j) * ldv + h * d + e];
            acc += term;
            abs += Math.abs(term);
          }
          out[(bi * N + i) * width + h * d + e] = acc;
          scale[(bi * N + i) * width + h * d + e] = abs;
        }
      }
    }
  }
  return { out, scale };
}

/** out [B, C] = mean over the N tokens of x [B, N, C]. */
function meanTokens(x, B, N, C) {
  const out = new Float64Array(B * C);
  const scale = new Float64Array(B * C);
  for (let bi = 0; bi < B; bi++) {
    for (let n = 0; n < N; n++) {
      for (let c = 0; c < C; c++) {
        out[bi * C + c] += x[(bi * N + n) * C + c] / N;
        scale[bi * C + c] += Math.abs(x[(bi * N + n) * C + c]) / N;
      }
    }
  }
  return { out, scale };
}

module.exports = { conv2d, depthwise3x3, groupAttention, meanTokens };
