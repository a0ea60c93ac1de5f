/**
 * Turns a /v1/classify request body into batcher input: an encoded image
 * (checked for format and size from its header before anything is decoded)
 * or a preprocessed `.npy` tensor.
 */
import sharp from 'sharp';
import { InputError, OptionsError } from '../errors';
import { jsonNestingDepth } from '../jsonDepth';
import { parseDecimal } from '../decimal';
import type { Model, Tensor4D } from '../model';
import { nativeLimits } from '../native';
import { parseNpy } from '../npy';
import { checkImageTensor, type ImageShape } from '../tensor';
import { HttpError } from './httpErrors';

export const IMAGE_TYPES = ['image/jpeg', 'image/png', 'image/webp'] as const;
export const NPY_TYPE = 'application/x-npy';
const IMAGE_FORMATS = new Set(['jpeg', 'png', 'webp']);

/**
 * Deepest JSON the API reads: a v2 FP32 tensor nested [B][C][H][W] inside "inputs" is 7 levels.
 * Anything deeper is refused by a linear scan before JSON.parse, which would spend seconds and
 * hundreds of megabytes on a body nested millions deep.
 */
export const MAX_JSON_DEPTH = 16;

/** Refuses (400 EVIT_BAD_REQUEST) JSON nested deeper than MAX_JSON_DEPTH, before it is parsed. */
export function checkJsonDepth(text: string, what: string): void {
  if (jsonNestingDepth(text, MAX_JSON_DEPTH) > MAX_JSON_DEPTH)
    throw new HttpError(400, 'EVIT_BAD_REQUEST', `${what} is nested deeper than ${MAX_JSON_DEPTH} levels, more than any request needs`);
}

export interface RequestOptions {
  top?: number;
  keepRate?: number;
}

export type ClassifyInput = { kind: 'image'; image: Buffer } | { kind: 'tensor'; tensor: Tensor4D };

/**
 * Reads only the image header: refuses formats other than jpeg/png/webp (415)
 * and images over `maxPixels` (413) before a single pixel is decoded.
 * Returns the pixels it will decode (width × height × frames): what its decode costs.
 */
export async function checkImage(image: Buffer, maxPixels: number): Promise<number> {
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
  const pixels = width * height * pages;
  if (pixels > maxPixels)
    throw new HttpError(413, 'EVIT_IMAGE_TOO_LARGE',
      `image is ${width}x${height}${pages > 1 ? ` with ${pages} frames` : ''}, over the limit of ${maxPixels} pixels`);
  return pixels;
}

/** Checks every image's header (see checkImage); returns their pixels in all. */
export async function checkImages(images: readonly Buffer[], maxPixels: number): Promise<number> {
  let pixels = 0;
  for (const image of images) pixels += await checkImage(image, maxPixels);
  return pixels;
}

/** The image tensor `model` takes, as checkImageTensor wants it. */
export function imageShapeOf(model: Model): ImageShape {
  return { inChans: model.architecture.inChans, imgSize: model.imgSize, maxBatch: nativeLimits().maxBatch };
}

/** A `.npy` float32 tensor [B, C, H, W] of the model's image shape, or [C, H, W] for one image. */
export function tensorFromNpy(buf: Buffer, want: ImageShape): Tensor4D {
  const { data, shape } = parseNpy(buf, '.npy body');
  const tensor = { data, shape: shape.length === 3 ? [1, ...shape] : shape };
  checkImageTensor(tensor, want, '.npy body');
  return tensor;
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

/** A number option from a query string or JSON: a number, or a plain decimal string ("0x1" is not 1). */
export function optionalNumber(name: string, v: unknown): number | undefined {
  if (v === undefined || v === null || v === '') return undefined;
  const n = typeof v === 'string' ? parseDecimal(v) : v;
  if (typeof n !== 'number' || !Number.isFinite(n)) throw new OptionsError(`${name} must be a number, got ${JSON.stringify(v)}`);
  return n;
}

/** Options from the query string (raw bodies) or the JSON body. */
export function requestOptions(source: Record<string, unknown>): RequestOptions {
  return { top: optionalNumber('top', source.top), keepRate: optionalNumber('keepRate', source.keepRate) };
}

/** A raw body: an encoded image, or a `.npy` file (of the model's image shape) when the content type is NPY_TYPE. */
export function rawInput(body: Buffer, contentType: string, want: ImageShape): ClassifyInput {
  if (body.length === 0) throw new InputError('request body is empty');
  return contentType === NPY_TYPE ? { kind: 'tensor', tensor: tensorFromNpy(body, want) } : { kind: 'image', image: body };
}

/** A JSON body: {"image": base64} or {"npy": base64}, with optional "top" and "keepRate". */
export function jsonInput(body: unknown, want: ImageShape): { input: ClassifyInput; options: RequestOptions } {
  if (body === null || typeof body !== 'object' || Array.isArray(body))
    throw new InputError('JSON body must be an object {"image": base64} or {"npy": base64}');
  const o = body as Record<string, unknown>;
  const has = ['image', 'npy'].filter((k) => o[k] !== undefined);
  if (has.length !== 1)
    throw new InputError(has.length ? 'JSON body must hold only one of "image" and "npy"' : 'JSON body needs "image" (base64 jpeg, png or webp) or "npy" (base64 .npy)');
  const options = requestOptions(o);
  if (has[0] === 'image') return { input: { kind: 'image', image: fromBase64('image', o.image) }, options };
  return { input: { kind: 'tensor', tensor: tensorFromNpy(fromBase64('npy', o.npy), want) }, options };
}
