/**
 * The layer schedule: which blocks reorganise their tokens and how many each keeps.
 * Token counts follow SPEC §1 exactly: k = ceil(keepRate · (N − 1)) in float64.
 */
import { OptionsError } from './errors';

export interface ScheduleOptions {
  /** Fraction of image tokens each dropping block keeps, in (0, 1]. Default 0.7. */
  keepRate?: number;
  /** 0-based indices of the dropping blocks. Default [3, 6, 9]. */
  dropLoc?: readonly number[];
  /** Fuse the dropped tokens into one extra token. Default true. */
  fuse?: boolean;
  /** Explicit keep counts, one per entry of dropLoc; overrides keepRate. */
  keepCounts?: readonly number[];
}

export interface Schedule {
  /** Per block: tokens kept (class token excluded), or -1 when the block runs dense. */
  readonly keep: Int32Array;
  /** Per block: 1 when the block appends a fused token. */
  readonly fuse: Uint8Array;
  /** Image tokens (class token excluded) leaving each block. */
  readonly tokenCounts: readonly number[];
  /** Blocks that actually reorganise, ascending. */
  readonly dropBlocks: readonly number[];
  readonly keepRate: number | null;
  readonly fused: boolean;
}

export const DEFAULT_DROP_LOC: readonly number[] = Object.freeze([3, 6, 9]);
export const DEFAULT_KEEP_RATE = 0.7;

function checkDropLoc(dropLoc: readonly number[], depth: number): number[] {
  if (!Array.isArray(dropLoc)) throw new OptionsError('dropLoc must be an array of block indices');
  const seen = new Set<number>();
  for (const b of dropLoc) {
    if (!Number.isInteger(b) || b < 0 || b >= depth)
      throw new OptionsError(`dropLoc entry ${String(b)} is out of range: the model has blocks 0..${depth - 1}`);
    if (seen.has(b)) throw new OptionsError(`dropLoc lists block ${b} twice`);
    seen.add(b);
  }
  return [...dropLoc].sort((a, b) => a - b);
}

/**
 * Works out the per-block plan for a model of `depth` blocks over `numPatches` image tokens.
 * A block whose keep count would not drop anything (k ≥ N − 1) runs dense, as in the reference.
 */
export function keepSchedule(depth: number, numPatches: number, opts: ScheduleOptions = {}): Schedule {
  const fused = opts.fuse ?? true;
  if (typeof fused !== 'boolean') throw new OptionsError('fuse must be a boolean');
  const order = checkDropLoc(opts.dropLoc ?? DEFAULT_DROP_LOC, depth);
  const requested = opts.dropLoc ?? DEFAULT_DROP_LOC;
  let keepRate: number | null = null;
  let counts: Map<number, number> | null = null;
  if (opts.keepCounts !== undefined) {
    if (opts.keepRate !== undefined) throw new OptionsError('pass either keepRate or keepCounts, not both');
    if (!Array.isArray(opts.keepCounts) || opts.keepCounts.length !== requested.length)
      throw new OptionsError(`keepCounts must have one entry per dropLoc entry (${requested.length})`);
    counts = new Map();
    requested.forEach((b, i) => counts!.set(b, opts.keepCounts![i]));
  } else {
    keepRate = opts.keepRate ?? DEFAULT_KEEP_RATE;
    if (typeof keepRate !== 'number' || !Number.isFinite(keepRate) || keepRate <= 0 || keepRate > 1)
      throw new OptionsError(`keepRate must be a number in (0, 1], got ${String(keepRate)}`);
  }

  const keep = new Int32Array(depth).fill(-1);
  const fuse = new Uint8Array(depth);
  const tokenCounts: number[] = [];
  const dropBlocks: number[] = [];
  const drops = new Set(order);
  let n = numPatches; // image tokens, class token excluded (N − 1)
  for (let i = 0; i < depth; i++) {
    if (drops.has(i)) {
      let k: number;
      if (counts) {
        k = counts.get(i)!;
        if (!Number.isInteger(k) || k < 1 || k > n)
          throw new OptionsError(`keepCounts for block ${i} must be an integer in [1, ${n}], got ${String(k)}`);
      } else {
        k = Math.ceil(keepRate! * n);
      }
      if (k < n) {
        keep[i] = k;
        fuse[i] = fused ? 1 : 0;
        n = k + (fused ? 1 : 0);
        dropBlocks.push(i);
      }
    }
    tokenCounts.push(n);
  }
  return { keep, fuse, tokenCounts, dropBlocks, keepRate, fused };
}
