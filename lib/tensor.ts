/** The image tensor the API takes, and the one check every entry point (Model, Batcher) makes of it. */
import { InputError } from './errors';

export interface Tensor4D {
  /** Absent or 'float32': already normalised values. */
  dtype?: 'float32';
  data: Float32Array;
  shape: readonly [number, number, number, number] | readonly number[];
}

/**
 * Images as 8-bit pixels, planar [B, C, H, W] (a quarter of the float32 tensor's bytes), with the
 * per-channel mean and std, in [0, 1] units, that normalise them: value v of channel c stands for
 * ((v / 255) - mean[c]) / std[c] in float32, exactly what preprocessBatch computes. The model
 * normalises them natively (on the GPU with CUDA). preprocessPixels() makes one; sharp's raw
 * output is interleaved (HWC) and must be made planar first.
 */
export interface PixelTensor {
  dtype: 'uint8';
  data: Uint8Array;
  shape: readonly [number, number, number, number] | readonly number[];
  /** Default: the model's preprocessing mean. */
  mean?: readonly number[];
  /** Default: the model's preprocessing std. */
  std?: readonly number[];
}

/** A tensor for Model.forward: float32 (already normalised) or uint8 pixels. */
export type ImageTensor = Tensor4D | PixelTensor;

/** Whether `input` asks for the uint8 path: any dtype other than absent or 'float32' (a wrong one is checkPixelTensor's to refuse). */
export function isPixelTensor(input: unknown): input is PixelTensor {
  if (input === null || typeof input !== 'object') return false;
  const dtype = (input as { dtype?: unknown }).dtype;
  return dtype !== undefined && dtype !== 'float32';
}

/** What a model takes: [batch ≤ maxBatch, inChans, imgSize, imgSize]. */
export interface ImageShape {
  inChans: number;
  imgSize: number;
  maxBatch: number;
}

/**
 * Checks `input` is a float32 [batch, C, H, W] tensor of the model's image shape; returns the batch.
 * @throws InputError naming `what` and what is wrong
 */
export function checkImageTensor(input: Tensor4D, want: ImageShape, what = 'input'): number {
  if (input === null || typeof input !== 'object') throw new InputError(`${what} must be {data, shape}`);
  const { data } = input;
  if (!(data instanceof Float32Array))
    throw new InputError(`${what}.data must be a Float32Array, got ${(data as unknown as object)?.constructor?.name ?? typeof data}` +
      ((data as unknown) instanceof Uint8Array ? ` (uint8 pixels: pass {dtype: 'uint8', data, shape})` : ''));
  return checkShape(input, want, what);
}

/**
 * Checks `input` is a uint8 PixelTensor of the model's image shape, with a mean and std (its own,
 * else `defaults`) of one finite number per channel, std > 0; returns the batch and the statistics.
 * @throws InputError naming `what` and what is wrong
 */
export function checkPixelTensor(input: PixelTensor, want: ImageShape, defaults: { mean: readonly number[]; std: readonly number[] },
  what = 'input'): { batch: number; mean: Float32Array; std: Float32Array } {
  if (input === null || typeof input !== 'object') throw new InputError(`${what} must be {dtype, data, shape}`);
  if (input.dtype !== 'uint8') throw new InputError(`${what}.dtype must be 'uint8' (or absent, for float32 data), got ${JSON.stringify(input.dtype)}`);
  const { data } = input;
  if (!(data instanceof Uint8Array))
    throw new InputError(`${what}.data must be a Uint8Array for dtype 'uint8', got ${(data as unknown as object)?.constructor?.name ?? typeof data}`);
  const batch = checkShape(input, want, what);
  const stat = (name: 'mean' | 'std'): Float32Array => {
    const v = input[name] ?? defaults[name];
    if (!Array.isArray(v) && !ArrayBuffer.isView(v)) throw new InputError(`${what}.${name} must be an array of ${want.inChans} numbers, got ${typeof v}`);
    const arr = Array.from(v as ArrayLike<unknown>);
    if (arr.length !== want.inChans)
      throw new InputError(`${what}.${name} must have one entry per channel: expected ${want.inChans}, got ${arr.length}`);
    arr.forEach((x, k) => {
      if (typeof x !== 'number' || !Number.isFinite(x)) throw new InputError(`${what}.${name}[${k}] must be a finite number, got ${String(x)}`);
      if (name === 'std' && !(Math.fround(x) > 0)) throw new InputError(`${what}.std[${k}] must be > 0, got ${x}`);
    });
    return Float32Array.from(arr as number[]);
  };
  return { batch, mean: stat('mean'), std: stat('std') };
}

function checkShape(input: { data: ArrayLike<number>; shape: Tensor4D['shape'] }, want: ImageShape, what: string): number {
  const { data, shape } = input;
  if (!Array.isArray(shape) || shape.length !== 4 || !shape.every((s) => Number.isSafeInteger(s) && s > 0))
    throw new InputError(`${what}.shape must be [batch, channels, height, width] of positive integers, got ${JSON.stringify(shape)}`);
  const [b, c, h, w] = shape as [number, number, number, number];
  if (c !== want.inChans || h !== want.imgSize || w !== want.imgSize)
    throw new InputError(`${what} has shape [${shape.join(', ')}], expected [batch, ${want.inChans}, ${want.imgSize}, ${want.imgSize}]`);
  if (b > want.maxBatch) throw new InputError(`${what} batch ${b} exceeds the maximum of ${want.maxBatch}`);
  if (data.length !== b * c * h * w)
    throw new InputError(`${what}.data has ${data.length} elements, shape [${shape.join(', ')}] needs ${b * c * h * w}`);
  return b;
}

/** The index of the first NaN or infinity in `data`, or -1. */
export function firstNonFinite(data: Float32Array): number {
  for (let i = 0; i < data.length; i++) if (!Number.isFinite(data[i]!)) return i;
  return -1;
}
