/**
 * Eval-mode BatchNorm folded into the convolution before it (tools/reference/SHUNTED.md,
 * "BatchNorm folding"): conv(x, W) followed by BatchNorm(γ, β, μ, σ², ε) equals conv(x, W') + b'
 * with a = γ / √(σ² + ε) per output channel, W' = W · a (each output channel's row scaled) and
 * b' = β − μ · a (plus a · b for a conv that had a bias). Computed in float64 and rounded to
 * float32 once, so the folded model is the authors' up to that one rounding.
 */
import type { TensorF32 } from './safetensors';

/** PyTorch's BatchNorm2d default. */
export const BATCH_NORM_EPS = 1e-5;

export interface BatchNormParams {
  weight: Float32Array;
  bias: Float32Array;
  runningMean: Float32Array;
  runningVar: Float32Array;
}

/**
 * The weight and bias of one convolution equal to `conv` (weight [Cout, ...], optional bias)
 * followed by `bn`. Variances must be >= 0 (checked where the architecture is inferred).
 */
export function foldBatchNorm(
  conv: TensorF32, convBias: Float32Array | null, bn: BatchNormParams, eps = BATCH_NORM_EPS,
): { weight: TensorF32; bias: Float32Array } {
  const cout = conv.shape[0]!;
  const per = conv.data.length / cout;
  const weight = new Float32Array(conv.data.length);
  const bias = new Float32Array(cout);
  for (let o = 0; o < cout; o++) {
    const a = bn.weight[o]! / Math.sqrt(bn.runningVar[o]! + eps);
    for (let i = 0; i < per; i++) weight[o * per + i] = conv.data[o * per + i]! * a;
    bias[o] = bn.bias[o]! + ((convBias ? convBias[o]! : 0) - bn.runningMean[o]!) * a;
  }
  return { weight: { shape: conv.shape.slice(), data: weight }, bias };
}
