/**
 * Image preprocessing matching timm's DeiT evaluation transform:
 * Resize(shorter side, bicubic) -> CenterCrop -> ToTensor -> Normalize.
 */
import { availableParallelism } from 'node:os';
import sharp from 'sharp';
import { AbortedError, InputError, OptionsError } from './errors';
import type { PixelTensor } from './tensor';

/** Preprocessing parameters; see {@link resolvePreprocess} for defaults. */
export interface PreprocessOptions {
  /** Side of the square center crop fed to the model (default 224). */
  imgSize: number;
  /** Shorter side after resizing, before cropping (default `Math.floor(imgSize / cropPct)`). */
  resizeSize?: number;
  /** Crop fraction used to derive `resizeSize` when it is not given (default 0.875). */
  cropPct?: number;
  /** Per-channel mean in [0, 1] units (default ImageNet (0.485, 0.456, 0.406); 0.449 for 1 channel). */
  mean?: readonly number[];
  /** Per-channel std in [0, 1] units (default ImageNet (0.229, 0.224, 0.225); 0.226 for 1 channel). */
  std?: readonly number[];
  /** 3 for RGB (default) or 1 for greyscale (PIL convert('L') luma). */
  channels?: 1 | 3;
}

/**
 * What a decode may cost. An image's header is read first (no pixels), so a small file that
 * claims a huge or absurdly shaped image is refused, or decoded reduced, before it costs anything.
 */
export interface DecodeLimits {
  /** Largest width × height × frames decoded at all (default 100 million). */
  maxPixels?: number;
  /** Largest ratio of the longer to the shorter side (default 64): past it the resize explodes. */
  maxAspect?: number;
  /** Images with more pixels are reduced on load first (default SHRINK_ON_LOAD_ABOVE). */
  shrinkOnLoadAbove?: number;
  /** Stops work on images not yet decoded when it fires (a server's client went away). */
  signal?: AbortSignal;
  /** Images of one batch decoded at once (default: the CPU count); a server decodes large ones singly. */
  concurrency?: number;
}

export const DEFAULT_MAX_DECODE_PIXELS = 100_000_000;
export const DEFAULT_MAX_ASPECT = 64;
/**
 * Above this many pixels libvips' shrink-on-load (JPEG and WebP decode at 1/2, 1/4 or 1/8) brings
 * the image down to twice the resize target first, then the exact PIL-style resize runs: memory and
 * time stay bounded, and results differ from PIL's full decode by about one grey level.
 */
export const SHRINK_ON_LOAD_ABOVE = 16_000_000;

const IMAGENET_MEAN = [0.485, 0.456, 0.406] as const;
const IMAGENET_STD = [0.229, 0.224, 0.225] as const;
// Single-channel defaults: the average of the ImageNet statistics.
const GREY_MEAN = [0.449] as const;
const GREY_STD = [0.226] as const;

function isPositiveInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v > 0;
}

function checkStats(name: 'mean' | 'std', v: unknown, channels: number): number[] {
  if (!Array.isArray(v) && !ArrayBuffer.isView(v)) {
    throw new OptionsError(`${name} must be an array of ${channels} numbers, got ${typeof v}`);
  }
  const arr = Array.from(v as ArrayLike<unknown>);
  if (arr.length !== channels) {
    throw new OptionsError(`${name} must have one entry per channel: expected ${channels}, got ${arr.length}`);
  }
  arr.forEach((x, k) => {
    if (typeof x !== 'number' || !Number.isFinite(x)) {
      throw new OptionsError(`${name}[${k}] must be a finite number, got ${String(x)}`);
    }
    if (name === 'std' && x <= 0) throw new OptionsError(`std[${k}] must be > 0, got ${x}`);
  });
  return arr as number[];
}

/**
 * Fills in defaults and validates preprocessing options. When `resizeSize` is
 * given it takes precedence over `cropPct`; when only `resizeSize` is given the
 * returned `cropPct` is `imgSize / resizeSize`.
 * @throws OptionsError naming the offending option and value
 */
export function resolvePreprocess(opts: Partial<PreprocessOptions> = {}): Required<PreprocessOptions> {
  if (opts === null || typeof opts !== 'object') {
    throw new OptionsError(`preprocess options must be an object, got ${opts === null ? 'null' : typeof opts}`);
  }
  const imgSize = opts.imgSize ?? 224;
  if (!isPositiveInt(imgSize)) throw new OptionsError(`imgSize must be a positive integer, got ${String(imgSize)}`);
  const channels = opts.channels ?? 3;
  if (channels !== 1 && channels !== 3) throw new OptionsError(`channels must be 1 or 3, got ${String(channels)}`);
  if (opts.cropPct !== undefined) {
    const c = opts.cropPct;
    if (typeof c !== 'number' || !Number.isFinite(c) || c <= 0 || c > 1) {
      throw new OptionsError(`cropPct must be a number in (0, 1], got ${String(c)}`);
    }
  }
  let resizeSize: number;
  let cropPct: number;
  if (opts.resizeSize !== undefined) {
    resizeSize = opts.resizeSize;
    if (!isPositiveInt(resizeSize)) {
      throw new OptionsError(`resizeSize must be a positive integer, got ${String(resizeSize)}`);
    }
    cropPct = opts.cropPct ?? imgSize / resizeSize;
  } else {
    cropPct = opts.cropPct ?? 0.875;
    resizeSize = Math.floor(imgSize / cropPct);
  }
  if (resizeSize < imgSize) {
    throw new OptionsError(
      `resizeSize (${resizeSize}) is smaller than imgSize (${imgSize}): a ${imgSize}x${imgSize} crop does not fit the resized image`,
    );
  }
  const mean = checkStats('mean', opts.mean ?? (channels === 3 ? IMAGENET_MEAN : GREY_MEAN), channels);
  const std = checkStats('std', opts.std ?? (channels === 3 ? IMAGENET_STD : GREY_STD), channels);
  return { imgSize, resizeSize, cropPct, mean, std, channels };
}

/** Python's round(): nearest integer, ties to even. */
function roundHalfEven(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/** torchvision Resize(int) output size: shorter side -> `size`, longer side floored. */
export function resizedSize(width: number, height: number, size: number): [width: number, height: number] {
  if (width <= height) return [size, Math.floor((size * height) / width)];
  return [Math.floor((size * width) / height), size];
}

// PIL's convert('L') luma, ITU-R 601-2 in 16-bit fixed point:
// L = (R*19595 + G*38470 + B*7471 + 0x8000) >> 16. recomb + 0.5 followed by
// libvips' truncating cast reproduces it exactly for all 2^24 colours.
const LUMA_PIL: sharp.Matrix3x3 = [
  [19595 / 65536, 38470 / 65536, 7471 / 65536],
  [0, 0, 0],
  [0, 0, 0],
];

/** Copies the `crop`x`crop` window at (left, top) out of an interleaved 8-bit image. */
function cropRaw(src: Uint8Array, width: number, C: number, left: number, top: number, crop: number): Uint8Array {
  const out = new Uint8Array(crop * crop * C);
  const row = crop * C;
  for (let y = 0; y < crop; y++) {
    const from = ((top + y) * width + left) * C;
    out.set(src.subarray(from, from + row), y * row);
  }
  return out;
}

const PRECISION_BITS = 22; // PIL: 32 - 8 - 2

/** PIL's bicubic kernel (Keys, a = -0.5). */
function bicubicPIL(x: number): number {
  const a = -0.5;
  if (x < 0) x = -x;
  if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
  return 0;
}

/**
 * PIL's precompute_coeffs + normalize_coeffs_8bpc for output positions
 * `first .. first+count-1` of a resize from `inSize` to `outSize`.
 */
function coeffsPIL(inSize: number, outSize: number, first: number, count: number) {
  const scale = inSize / outSize;
  const filterscale = Math.max(scale, 1);
  const support = 2 * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const ss = 1 / filterscale;
  const start = new Int32Array(count);
  const len = new Int32Array(count);
  const k = new Int32Array(count * ksize);
  const w = new Float64Array(ksize);
  for (let j = 0; j < count; j++) {
    const center = (first + j + 0.5) * scale;
    const xmin = Math.max(0, Math.trunc(center - support + 0.5));
    const xmax = Math.min(inSize, Math.trunc(center + support + 0.5)) - xmin;
    let ww = 0;
    for (let x = 0; x < xmax; x++) {
      w[x] = bicubicPIL((x + xmin - center + 0.5) * ss);
      ww += w[x]!;
    }
    for (let x = 0; x < xmax; x++) {
      const v = (ww !== 0 ? w[x]! / ww : w[x]!) * (1 << PRECISION_BITS);
      k[j * ksize + x] = v < 0 ? Math.trunc(-0.5 + v) : Math.trunc(0.5 + v);
    }
    start[j] = xmin;
    len[j] = xmax;
  }
  return { start, len, k, ksize };
}

function clip8(ss: number): number {
  const v = ss >> PRECISION_BITS;
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

/**
 * Resizes an interleaved 8-bit image to rw x rh exactly as PIL's
 * Image.resize(..., BICUBIC) does (horizontal pass, 8-bit clip, vertical pass,
 * 22-bit fixed point), computing only the crop window at (left, top).
 */
function resampleCropPIL(
  src: Uint8Array, width: number, height: number, C: number,
  rw: number, rh: number, left: number, top: number, crop: number,
): Uint8Array {
  const hx = coeffsPIL(width, rw, left, crop);
  const vy = coeffsPIL(height, rh, top, crop);
  const y0 = vy.start[0]!;
  const y1 = vy.start[crop - 1]! + vy.len[crop - 1]!;
  const half = 1 << (PRECISION_BITS - 1);
  const tmp = new Uint8Array((y1 - y0) * crop * C);
  for (let y = y0; y < y1; y++) {
    const rowIn = y * width;
    const rowOut = (y - y0) * crop;
    for (let j = 0; j < crop; j++) {
      const xmin = hx.start[j]!;
      const n = hx.len[j]!;
      const kb = j * hx.ksize;
      for (let c = 0; c < C; c++) {
        let ss = half;
        for (let x = 0; x < n; x++) ss += src[(rowIn + xmin + x) * C + c]! * hx.k[kb + x]!;
        tmp[(rowOut + j) * C + c] = clip8(ss);
      }
    }
  }
  const out = new Uint8Array(crop * crop * C);
  const stride = crop * C;
  for (let i = 0; i < crop; i++) {
    const base = (vy.start[i]! - y0) * stride;
    const n = vy.len[i]!;
    const kb = i * vy.ksize;
    for (let q = 0; q < stride; q++) {
      let ss = half;
      for (let y = 0; y < n; y++) ss += tmp[base + y * stride + q]! * vy.k[kb + y]!;
      out[i * stride + q] = clip8(ss);
    }
  }
  return out;
}

function describe(input: string | Buffer): string {
  return typeof input === 'string' ? `image file ${input}` : `image from buffer of ${input.length} bytes`;
}

/**
 * The image's size as it will be decoded (EXIF-oriented), read from its header only; refuses what
 * `limits` do not allow. Returns the intermediate size to shrink to on load, or null for a full decode.
 */
async function plannedDecode(input: string | Buffer, o: Required<PreprocessOptions>, limits: DecodeLimits): Promise<[number, number] | null> {
  const maxPixels = limits.maxPixels ?? DEFAULT_MAX_DECODE_PIXELS;
  const maxAspect = limits.maxAspect ?? DEFAULT_MAX_ASPECT;
  let meta: sharp.Metadata;
  try {
    meta = await sharp(input, { limitInputPixels: false }).metadata();
  } catch (err) {
    throw new InputError(`cannot decode ${describe(input)}: ${(err as Error).message}`, { cause: err });
  }
  let { width = 0, height = 0 } = meta;
  if ((meta.orientation ?? 1) >= 5) [width, height] = [height, width];
  const pages = meta.pages ?? 1;
  if (width < 1 || height < 1) throw new InputError(`${describe(input)}: its header gives no dimensions (${width}x${height})`);
  if (width * height * pages > maxPixels)
    throw new InputError(`${describe(input)} is ${width}x${height}${pages > 1 ? ` with ${pages} frames` : ''}, ` +
      `over the decode limit of ${maxPixels} pixels`);
  if (Math.max(width, height) > maxAspect * Math.min(width, height))
    throw new InputError(`${describe(input)} is ${width}x${height}: its aspect ratio is beyond ${maxAspect}:1`);
  if (width * height <= (limits.shrinkOnLoadAbove ?? SHRINK_ON_LOAD_ABOVE)) return null;
  const [rw, rh] = resizedSize(width, height, o.resizeSize);
  return [Math.min(width, 2 * rw), Math.min(height, 2 * rh)];
}

/** Decodes, orients, resizes and crops one image: its `imgSize`² pixels, 8-bit, channels interleaved (HWC). */
async function decodeCrop(
  input: string | Buffer,
  o: Required<PreprocessOptions>,
  limits: DecodeLimits = {},
): Promise<Uint8Array> {
  if (typeof input === 'string') {
    if (input.length === 0) throw new InputError('image path is an empty string');
  } else if (input instanceof Uint8Array) {
    if (input.length === 0) throw new InputError('cannot decode image from buffer of 0 bytes: buffer is empty');
  } else {
    throw new InputError(`image input must be a file path or a Buffer, got ${input === null ? 'null' : typeof input}`);
  }
  const shrinkTo = await plannedDecode(input, o, limits);
  if (limits.signal?.aborted) throw new AbortedError('the image was not decoded: its request was aborted', { cause: limits.signal.reason });
  // Stage 1: decode at full size (huge images: reduced on load), apply EXIF orientation, drop
  // alpha (like PIL's convert('RGB'), which discards alpha before any resampling) and convert to
  // 8-bit sRGB. Embedded ICC profiles are ignored, as PIL does. Any libjpeg/libpng warning, such
  // as "Corrupt JPEG data", fails the decode: a damaged image is an error, not an input.
  let decoded: { data: Buffer; info: sharp.OutputInfo };
  try {
    let pipeline = sharp(input, { failOn: 'warning', autoOrient: true, ignoreIcc: true, limitInputPixels: false });
    if (shrinkTo) pipeline = pipeline.resize(shrinkTo[0], shrinkTo[1], { kernel: 'cubic', fit: 'fill', fastShrinkOnLoad: true });
    decoded = await pipeline
      .removeAlpha()
      .toColourspace('srgb')
      .raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true });
  } catch (err) {
    throw new InputError(`cannot decode ${describe(input)}: ${(err as Error).message}`, { cause: err });
  }
  const { width, height } = decoded.info;
  if (decoded.info.channels !== 3) {
    throw new InputError(`${describe(input)} decoded to ${decoded.info.channels} channels, expected 3`);
  }
  const channels = o.channels;
  const space = channels === 3 ? 'srgb' : 'b-w';
  let source = decoded.data;
  if (channels === 1) {
    // Greyscale the way timm loads it (PIL convert('L'), gamma-encoded luma),
    // not libvips' linear-light luminance; done before resizing, as PIL does.
    try {
      source = await sharp(decoded.data, { raw: { width, height, channels: 3 } })
        .recomb(LUMA_PIL)
        .linear(1, 0.5)
        .extractChannel(0)
        .raw({ depth: 'uchar' })
        .toBuffer();
    } catch (err) {
      throw new InputError(`cannot convert ${describe(input)} to greyscale: ${(err as Error).message}`, { cause: err });
    }
  }

  // Stage 2: bicubic resize of the shorter side, then torchvision's center crop.
  const [rw, rh] = resizedSize(width, height, o.resizeSize);
  const crop = o.imgSize;
  if (crop > rw || crop > rh) {
    throw new OptionsError(`crop ${crop}x${crop} is larger than the resized image ${rw}x${rh} of ${describe(input)}`);
  }
  const top = roundHalfEven((rh - crop) / 2);
  const left = roundHalfEven((rw - crop) / 2);
  let pixels: Uint8Array;
  if (rw === width && rh === height) {
    // torchvision returns the image untouched when it already has the target size.
    pixels = cropRaw(source, width, channels, left, top, crop);
  } else if (rw > width) {
    // Upscaling (both sides grow together): libvips' upsampler is not PIL's
    // bicubic convolution, so compute the crop window with PIL's algorithm.
    // The cost is bounded by the crop size, whatever the input size.
    pixels = resampleCropPIL(source, width, height, channels, rw, rh, left, top, crop);
  } else {
    try {
      const res = await sharp(source, { raw: { width, height, channels } })
        .resize(rw, rh, { kernel: 'cubic', fit: 'fill', fastShrinkOnLoad: false })
        .extract({ left, top, width: crop, height: crop })
        .toColourspace(space)
        .raw({ depth: 'uchar' })
        .toBuffer({ resolveWithObject: true });
      if (res.info.width !== crop || res.info.height !== crop || res.info.channels !== channels) {
        throw new Error(`got ${res.info.width}x${res.info.height}x${res.info.channels}`);
      }
      pixels = res.data;
    } catch (err) {
      throw new InputError(
        `cannot resize ${describe(input)} (${width}x${height} -> ${rw}x${rh}, crop ${crop}): ${(err as Error).message}`,
        { cause: err },
      );
    }
  }

  return pixels;
}

/**
 * ToTensor + Normalize in float32, as torch does: lut[c][v] = ((v / 255) - mean[c]) / std[c], each
 * step rounded to float32. The native side builds the same table (src/backend/pixels.h) for uint8
 * input, so both give the same bits.
 */
export function normalizationTable(mean: readonly number[], std: readonly number[]): Float32Array {
  const C = mean.length;
  const lut = new Float32Array(C * 256);
  for (let c = 0; c < C; c++) {
    const m = Math.fround(mean[c]!);
    const s = Math.fround(std[c]!);
    for (let v = 0; v < 256; v++) lut[c * 256 + v] = Math.fround(Math.fround(v / 255) - m) / s;
  }
  return lut;
}

/** Decodes one image and writes it normalised into `out` at `offset` (CHW float32). */
async function preprocessInto(
  input: string | Buffer,
  o: Required<PreprocessOptions>,
  out: Float32Array,
  offset: number,
  limits: DecodeLimits = {},
): Promise<void> {
  const pixels = await decodeCrop(input, o, limits);
  const C = o.channels;
  const plane = o.imgSize * o.imgSize;
  const lut = normalizationTable(o.mean, o.std);
  for (let c = 0; c < C; c++) {
    const base = offset + c * plane;
    for (let p = 0, q = c; p < plane; p++, q += C) out[base + p] = lut[c * 256 + pixels[q]!]!;
  }
}

/** Decodes one image and writes its pixels planar into `out` at `offset` (CHW uint8). */
async function pixelsInto(
  input: string | Buffer,
  o: Required<PreprocessOptions>,
  out: Uint8Array,
  offset: number,
  limits: DecodeLimits = {},
): Promise<void> {
  const pixels = await decodeCrop(input, o, limits);
  const C = o.channels;
  const plane = o.imgSize * o.imgSize;
  if (C === 1) {
    out.set(pixels, offset);
    return;
  }
  for (let c = 0; c < C; c++) {
    const base = offset + c * plane;
    for (let p = 0, q = c; p < plane; p++, q += C) out[base + p] = pixels[q]!;
  }
}

/**
 * Loads one image (file path or encoded buffer) and returns a CHW float32
 * tensor of shape [channels, imgSize, imgSize], following timm's DeiT eval
 * transform (bicubic shorter-side resize, center crop, mean/std normalisation).
 * Images are auto-oriented from EXIF; alpha is dropped; channels=1 uses PIL's
 * convert('L') luma. Enlarging reproduces PIL's bicubic exactly; shrinking uses
 * libvips' cubic kernel (typically within 1/255 of PIL).
 * @throws InputError when the input cannot be read or decoded
 * @throws OptionsError when the options are invalid
 */
export async function preprocessImage(
  input: string | Buffer,
  opts: Required<PreprocessOptions>,
  limits: DecodeLimits = {},
): Promise<Float32Array> {
  const o = resolvePreprocess(opts);
  const out = new Float32Array(o.channels * o.imgSize * o.imgSize);
  await preprocessInto(input, o, out, 0, limits);
  return out;
}

/** Runs `one(k)` for k < n, at most `concurrency` at once; the first failure stops the rest. */
async function eachConcurrently(n: number, limits: DecodeLimits, one: (k: number) => Promise<void>): Promise<void> {
  let next = 0;
  let failed = false;
  const worker = async (): Promise<void> => {
    while (!failed && next < n) {
      const k = next++;
      try {
        await one(k);
      } catch (err) {
        failed = true;
        throw err;
      }
    }
  };
  const workers = Math.max(1, Math.min(n, limits.concurrency ?? availableParallelism()));
  await Promise.all(Array.from({ length: workers }, worker));
}

/**
 * Preprocesses several images concurrently (bounded by the CPU count) and packs
 * them, in input order, into one NCHW float32 tensor.
 * @throws InputError for an empty batch or for the first image that fails
 * @throws OptionsError when the options are invalid
 */
export async function preprocessBatch(
  inputs: Array<string | Buffer>,
  opts: Required<PreprocessOptions>,
  limits: DecodeLimits = {},
): Promise<{ data: Float32Array; shape: [number, number, number, number] }> {
  const o = resolvePreprocess(opts);
  if (!Array.isArray(inputs) || inputs.length === 0) {
    throw new InputError('preprocessBatch needs a non-empty array of image paths or buffers');
  }
  const n = inputs.length;
  const per = o.channels * o.imgSize * o.imgSize;
  const data = new Float32Array(n * per);
  await eachConcurrently(n, limits, (k) => preprocessInto(inputs[k]!, o, data, k * per, limits));
  return { data, shape: [n, o.channels, o.imgSize, o.imgSize] };
}

/**
 * As {@link preprocessBatch}, but stops before the normalisation: the images' 8-bit pixels,
 * planar [B, C, H, W], with the mean and std the model normalises them by. A quarter of the
 * bytes of the float32 tensor; Model.forward normalises them natively (on the GPU with CUDA),
 * bit for bit as preprocessBatch would have.
 */
export async function preprocessPixels(
  inputs: Array<string | Buffer>,
  opts: Required<PreprocessOptions>,
  limits: DecodeLimits = {},
): Promise<PixelTensor> {
  const o = resolvePreprocess(opts);
  if (!Array.isArray(inputs) || inputs.length === 0) {
    throw new InputError('preprocessPixels needs a non-empty array of image paths or buffers');
  }
  const n = inputs.length;
  const per = o.channels * o.imgSize * o.imgSize;
  const data = new Uint8Array(n * per);
  await eachConcurrently(n, limits, (k) => pixelsInto(inputs[k]!, o, data, k * per, limits));
  return { dtype: 'uint8', data, shape: [n, o.channels, o.imgSize, o.imgSize], mean: [...o.mean], std: [...o.std] };
}
