/** The image tensor the API takes, and the one check every entry point (Model, Batcher) makes of it. */
import { InputError } from './errors';

export interface Tensor4D {
  data: Float32Array;
  shape: readonly [number, number, number, number] | readonly number[];
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
  const { data, shape } = input;
  if (!(data instanceof Float32Array))
    throw new InputError(`${what}.data must be a Float32Array, got ${(data as unknown as object)?.constructor?.name ?? typeof data}`);
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
