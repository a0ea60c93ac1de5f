/**
 * Position-embedding resizing for inputs whose patch grid differs from the
 * checkpoint's: the class-token row is kept and the grid is resized with the
 * same bicubic interpolation as torch `F.interpolate(mode='bicubic',
 * align_corners=False)`.
 */
import { OptionsError, WeightsError } from '../errors';

/** Cubic convolution constant used by torch's bicubic upsampling. */
const A = -0.75;

/** Weight for a tap at distance |x| <= 1. */
function cubic1(x: number): number {
  return ((A + 2) * x - (A + 3)) * x * x + 1;
}

/** Weight for a tap at distance 1 < |x| < 2. */
function cubic2(x: number): number {
  return ((A * x - 5 * A) * x + 8 * A) * x - 4 * A;
}

/**
 * For each output index, the 4 clamped source indices and their weights
 * (flattened: 4 per output).
 */
function taps(inSize: number, outSize: number): { idx: Int32Array; w: Float64Array } {
  const idx = new Int32Array(outSize * 4);
  const w = new Float64Array(outSize * 4);
  const scale = inSize / outSize;
  for (let o = 0; o < outSize; o++) {
    // Half-pixel centres; not clamped for cubic (torch area_pixel_compute_source_index, cubic=true).
    const src = (o + 0.5) * scale - 0.5;
    const i0 = Math.floor(src);
    const t = src - i0;
    const ws = [cubic2(t + 1), cubic1(t), cubic1(1 - t), cubic2(2 - t)];
    for (let k = 0; k < 4; k++) {
      idx[4 * o + k] = Math.min(Math.max(i0 - 1 + k, 0), inSize - 1);
      w[4 * o + k] = ws[k]!;
    }
  }
  return { idx, w };
}

function checkSize(name: string, s: unknown): [number, number] {
  if (
    !Array.isArray(s) || s.length !== 2 ||
    !s.every((v) => typeof v === 'number' && Number.isSafeInteger(v) && v >= 1)
  ) {
    throw new OptionsError(`${name} grid size must be [rows, cols] of positive integers, got ${JSON.stringify(s)}`);
  }
  return [s[0], s[1]];
}

/**
 * Resizes a position embedding `[1 + H*W, C]` (row-major, class token first)
 * from grid `from` = [H, W] to grid `to` = [H2, W2], returning `[1 + H2*W2, C]`.
 * The class-token row is copied unchanged; the grid is resized per channel by
 * separable bicubic interpolation (A = -0.75, half-pixel centres, edge indices
 * clamped, align_corners=False), accumulated in float64.
 * The same size returns a copy.
 *
 * @throws OptionsError for invalid sizes or channel count
 * @throws WeightsError if `pos` does not hold (1 + H*W) * C values
 */
export function resizePosEmbed(
  pos: Float32Array,
  channels: number,
  from: [number, number],
  to: [number, number],
): Float32Array {
  if (!Number.isSafeInteger(channels) || channels < 1) {
    throw new OptionsError(`channels must be a positive integer, got ${String(channels)}`);
  }
  const [h, w] = checkSize('source', from);
  const [h2, w2] = checkSize('target', to);
  const C = channels;
  const expected = (1 + h * w) * C;
  if (!(pos instanceof Float32Array) || pos.length !== expected) {
    throw new WeightsError(
      `pos_embed has ${pos?.length} values, expected (1 + ${h}*${w}) * ${C} = ${expected} for a ${h}x${w} grid`,
    );
  }
  if (h === h2 && w === w2) return pos.slice();

  const out = new Float32Array((1 + h2 * w2) * C);
  out.set(pos.subarray(0, C), 0);

  // Pass 1: along columns, [h, w, C] -> [h, w2, C].
  const tx = taps(w, w2);
  const mid = new Float64Array(h * w2 * C);
  for (let y = 0; y < h; y++) {
    const rowIn = C + y * w * C;
    for (let x = 0; x < w2; x++) {
      const o = (y * w2 + x) * C;
      for (let k = 0; k < 4; k++) {
        const wt = tx.w[4 * x + k]!;
        const src = rowIn + tx.idx[4 * x + k]! * C;
        for (let c = 0; c < C; c++) mid[o + c] += wt * pos[src + c]!;
      }
    }
  }

  // Pass 2: along rows, [h, w2, C] -> [h2, w2, C].
  const ty = taps(h, h2);
  const acc = new Float64Array(w2 * C);
  for (let y = 0; y < h2; y++) {
    acc.fill(0);
    for (let k = 0; k < 4; k++) {
      const wt = ty.w[4 * y + k]!;
      const src = ty.idx[4 * y + k]! * w2 * C;
      for (let j = 0; j < w2 * C; j++) acc[j] += wt * mid[src + j]!;
    }
    out.set(acc, C + y * w2 * C);
  }
  return out;
}
