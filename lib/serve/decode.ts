/**
 * Turns a /v1/classify request body into batcher input: an encoded image
 * (checked for format and size from its header before anything is decoded)
 * or a preprocessed `.npy` tensor.
 */
import sharp from 'sharp';
import { InputError, OptionsError } from '../errors';
import type { Tensor4D } from '../model';
import { parseNpy } from '../npy';
import { HttpError } from './httpErrors';

export const IMAGE_TYPES = ['image/jpeg', 'image/png', 'image/webp'] as const;
export const NPY_TYPE = 'application/x-npy';
const IMAGE_FORMATS = new Set(['jpeg', 'png', 'webp']);

export interface RequestOptions {
  top?: number;
  keepRate?: number;
}

export type ClassifyInput = { kind: 'image'; image: Buffer } | { kind: 'tensor'; tensor: Tensor4D };

/**
 * Reads only the image header: refuses formats other than jpeg/png/webp (415)
 * and images over `maxPixels` (413) before a single pixel is decoded.
 */
export async function checkImage(image: Buffer, maxPixels: number): Promise<void> {
  let meta: sharp.Metadata;
  try {
    // limitInputPixels makes sharp itself refuse the header of a decompression bomb.
    meta = await sharp(image, { limitInputPixels: maxPixels }).metadata();
  } catch (err) {
    const msg = (err as Error).message;
    if (/pixel limit/i.test(msg))
      throw new HttpError(413, 'EVIT_IMAGE_TOO_LARGE', `image dimensions exceed the limit of ${maxPixels} pixels`, { cause: err });
    throw new InputError(`cannot decode image of ${image.length} bytes: ${msg}`, { cause: err });
  }
  if (!meta.format || !IMAGE_FORMATS.has(meta.format))
    throw new HttpError(415, 'EVIT_UNSUPPORTED_MEDIA_TYPE', `image format ${meta.format ?? 'unknown'} is not supported; send jpeg, png or webp`);
  const { width = 0, height = 0 } = meta;
  const pages = meta.pages ?? 1;
  if (width < 1 || height < 1) throw new InputError(`image header gives no dimensions (${width}x${height})`);
  // Every page counts: an animated image is decoded whole.
  if (width * height * pages > maxPixels)
    throw new HttpError(413, 'EVIT_IMAGE_TOO_LARGE',
      `image is ${width}x${height}${pages > 1 ? ` with ${pages} frames` : ''}, over the limit of ${maxPixels} pixels`);
}

/** A `.npy` float32 tensor [B, C, H, W], or [C, H, W] for one image. */
export function tensorFromNpy(buf: Buffer): Tensor4D {
  const { data, shape } = parseNpy(buf, '.npy body');
  if (shape.length === 3) return { data, shape: [1, ...shape] };
  if (shape.length !== 4) throw new InputError(`.npy body has shape (${shape.join(', ')}), expected [B, C, H, W] or [C, H, W]`);
  if (shape[0] === 0) throw new InputError('.npy body holds no images (batch 0)');
  return { data, shape };
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

export function fromBase64(field: string, value: unknown): Buffer {
  if (typeof value !== 'string') throw new InputError(`"${field}" must be a base64 string, got ${value === null ? 'null' : typeof value}`);
  // Data URLs are accepted as they come out of a browser's FileReader.
  const text = value.replace(/^data:[\w.+/-]+;base64,/, '').replace(/\s+/g, '');
  if (text.length === 0) throw new InputError(`"${field}" is empty`);
  if (text.length % 4 !== 0 || !BASE64.test(text)) throw new InputError(`"${field}" is not valid base64`);
  return Buffer.from(text, 'base64');
}

export function optionalNumber(name: string, v: unknown): number | undefined {
  if (v === undefined || v === null || v === '') return undefined;
  const n = typeof v === 'string' ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isFinite(n)) throw new OptionsError(`${name} must be a number, got ${JSON.stringify(v)}`);
  return n;
}

/** Options from the query string (raw bodies) or the JSON body. */
export function requestOptions(source: Record<string, unknown>): RequestOptions {
  return { top: optionalNumber('top', source.top), keepRate: optionalNumber('keepRate', source.keepRate) };
}

/** A raw body: an encoded image, or a `.npy` file when the content type is NPY_TYPE. */
export function rawInput(body: Buffer, contentType: string): ClassifyInput {
  if (body.length === 0) throw new InputError('request body is empty');
  return contentType === NPY_TYPE ? { kind: 'tensor', tensor: tensorFromNpy(body) } : { kind: 'image', image: body };
}

/** A JSON body: {"image": base64} or {"npy": base64}, with optional "top" and "keepRate". */
export function jsonInput(body: unknown): { input: ClassifyInput; options: RequestOptions } {
  if (body === null || typeof body !== 'object' || Array.isArray(body))
    throw new InputError('JSON body must be an object {"image": base64} or {"npy": base64}');
  const o = body as Record<string, unknown>;
  const has = ['image', 'npy'].filter((k) => o[k] !== undefined);
  if (has.length !== 1)
    throw new InputError(has.length ? 'JSON body must hold only one of "image" and "npy"' : 'JSON body needs "image" (base64 jpeg, png or webp) or "npy" (base64 .npy)');
  const options = requestOptions(o);
  if (has[0] === 'image') return { input: { kind: 'image', image: fromBase64('image', o.image) }, options };
  return { input: { kind: 'tensor', tensor: tensorFromNpy(fromBase64('npy', o.npy)) }, options };
}
