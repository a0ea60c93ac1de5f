/**
 * Which patches survive: per dropping block, a mask over the original patch grid saying
 * whether each patch is still a token of its own, lives on only inside a fused token, or
 * is gone; and a rendering of those masks over the image, one panel per dropping block.
 */
import sharp from 'sharp';
import { InputError, OptionsError } from './errors';
import type { KeptTokens, Model } from './model';
import { preprocessImage, resizedSize, type PreprocessOptions } from './preprocess';
import type { Schedule, ScheduleOptions } from './schedule';

/** Mask value: the patch is gone (discarded without fusion). */
export const PATCH_DROPPED = 0;
/** Mask value: the patch is still a token of its own. */
export const PATCH_KEPT = 1;
/** Mask value: the patch survives only as part of a fused token. */
export const PATCH_FUSED = 2;

export interface PatchCounts {
  kept: number;
  fused: number;
  dropped: number;
}

export interface BlockMask {
  /** The dropping block, 0-based: the mask describes the tokens leaving it. */
  block: number;
  /** [batch, gridH, gridW] row-major: PATCH_KEPT, PATCH_FUSED or PATCH_DROPPED per original patch. */
  mask: Uint8Array;
  shape: [number, number, number];
  /** Per image of the batch. */
  counts: PatchCounts[];
}

export interface PatchMasks {
  /** [rows, cols] of the patch grid; patch index p sits at row floor(p / cols), column p % cols. */
  grid: [number, number];
  batch: number;
  /** One entry per dropping block, in block order. */
  blocks: BlockMask[];
}

/** The patch grid of a model at its input size. */
export function modelGrid(model: Pick<Model, 'imgSize' | 'architecture'>): [number, number] {
  const a = model.architecture;
  if (!('patchSize' in a)) throw new OptionsError(NOTHING_DROPPED);
  const g = model.imgSize / a.patchSize;
  return [g, g];
}

/** A Shunted Transformer aggregates keys inside attention: there are no dropped patches to draw. */
const NOTHING_DROPPED = 'visualize draws the patches an EViT model keeps, fuses and drops; a Shunted Transformer drops none';

function checkGrid(grid: unknown): [number, number] {
  if (!Array.isArray(grid) || grid.length !== 2 || !grid.every((g) => Number.isSafeInteger(g) && g > 0))
    throw new OptionsError(`grid must be [rows, cols] of positive integers, got ${JSON.stringify(grid)}`);
  return [grid[0], grid[1]];
}

/**
 * Derives per-block patch masks from the `kept` origins of a forward pass (SPEC §1): a token
 * kept at a block is either an original patch (index ≥ 0), whose mask entry is PATCH_KEPT, or a
 * fused token `−1 − L` made at block L, whose member patches are PATCH_FUSED. The tokens a
 * block discards are fused into its own token `−1 − block` when that token is in its list
 * (last), and are gone otherwise.
 * @throws InputError when the origins do not describe a valid sequence of reorganisations
 */
export function patchMasks(
  result: { kept: readonly KeptTokens[]; shape?: readonly number[] },
  grid: readonly [number, number],
): PatchMasks {
  const [rows, cols] = checkGrid(grid);
  const P = rows * cols;
  const kept = result?.kept;
  if (!Array.isArray(kept)) throw new InputError('patchMasks needs a forward result with a `kept` array');
  // A dense pass keeps no list: its batch is the logits' first dimension.
  const batch = kept.length ? kept[0]!.shape?.[0] : (result.shape?.[0] ?? 0);
  let last = -1;
  for (const k of kept) {
    if (!k || !Number.isInteger(k.block) || k.block < 0)
      throw new InputError(`kept entries need a non-negative integer block, got ${JSON.stringify(k?.block)}`);
    if (k.block <= last) throw new InputError(`kept entries must be in ascending block order: block ${k.block} follows ${last}`);
    last = k.block;
    if (!(k.tokens instanceof Int32Array) || !Array.isArray(k.shape) || k.shape.length !== 2)
      throw new InputError(`kept entry for block ${k.block} needs tokens: Int32Array and shape [batch, perImage]`);
    if (k.shape[0] !== batch || k.tokens.length !== k.shape[0] * k.shape[1])
      throw new InputError(`kept entry for block ${k.block} has shape [${k.shape.join(', ')}] and ${k.tokens.length} tokens; expected batch ${batch}`);
  }

  const blocks: BlockMask[] = kept.map((k) => ({
    block: k.block,
    mask: new Uint8Array(batch * P),
    shape: [batch, rows, cols],
    counts: [],
  }));
  for (let i = 0; i < batch; i++) {
    // Patches each fused token stands for, by origin id −1 − L.
    const members = new Map<number, number[]>();
    let alive = new Set<number>(Array.from({ length: P }, (_, p) => p));
    kept.forEach((k, j) => {
      const per = k.shape[1];
      const row = k.tokens.subarray(i * per, (i + 1) * per);
      const own = -1 - k.block;
      const fusedHere = per > 0 && row[per - 1] === own;
      const survivors = fusedHere ? row.subarray(0, per - 1) : row;
      const next = new Set<number>();
      for (const o of survivors) {
        if (!alive.has(o)) {
          const what = o >= 0 ? `patch ${o}` : `the token fused at block ${-1 - o}`;
          throw new InputError(`kept tokens of block ${k.block}, image ${i}, name ${what}, which ${o >= -P && o < P ? 'was not a token entering that block' : 'does not exist'}`);
        }
        if (next.has(o)) throw new InputError(`kept tokens of block ${k.block}, image ${i}, name origin ${o} twice`);
        next.add(o);
      }
      const mask = blocks[j]!.mask.subarray(i * P, (i + 1) * P);
      const expand = (o: number): readonly number[] => (o >= 0 ? [o] : members.get(o)!);
      if (fusedHere) {
        const into: number[] = [];
        for (const o of alive) if (!next.has(o)) into.push(...expand(o));
        members.set(own, into);
        next.add(own);
      }
      for (const o of next) {
        if (o >= 0) mask[o] = PATCH_KEPT;
        else for (const p of expand(o)) mask[p] = PATCH_FUSED;
      }
      const counts = { kept: 0, fused: 0, dropped: 0 };
      for (const v of mask) {
        if (v === PATCH_KEPT) counts.kept++;
        else if (v === PATCH_FUSED) counts.fused++;
        else counts.dropped++;
      }
      blocks[j]!.counts.push(counts);
      alive = next;
    });
  }
  return { grid: [rows, cols], batch, blocks };
}

/** An RGBA colour, each channel 0..255. */
export type Rgba = readonly [number, number, number, number];

export interface RenderOptions {
  /** Pixels between panels. Default 4. */
  gap?: number;
  /** Integer magnification of every panel. Default: enough to make a panel about 224 px wide. */
  scale?: number;
  /** Which image of the masks' batch to draw. Default 0. */
  image?: number;
  /** Overlay on discarded patches. Default black at 80% opacity. */
  droppedColor?: Rgba;
  /** Overlay on patches that live on inside a fused token. Default blue at 59% opacity. */
  fusedColor?: Rgba;
}

export interface Rendering {
  /** PNG: the model's view of the image, then one panel per dropping block, left to right. */
  png: Buffer;
  width: number;
  height: number;
  /** Side of one panel in pixels. */
  panel: number;
}

export const DEFAULT_DROPPED_COLOR: Rgba = [0, 0, 0, 204];
export const DEFAULT_FUSED_COLOR: Rgba = [30, 110, 255, 150];

function checkColor(name: string, c: unknown): Rgba {
  if (!Array.isArray(c) || c.length !== 4 || !c.every((v) => Number.isInteger(v) && v >= 0 && v <= 255))
    throw new OptionsError(`${name} must be [r, g, b, a] with integers 0..255, got ${JSON.stringify(c)}`);
  return c as unknown as Rgba;
}

function checkInt(name: string, v: unknown, min: number): number {
  if (!Number.isSafeInteger(v) || (v as number) < min) throw new OptionsError(`${name} must be an integer ≥ ${min}, got ${String(v)}`);
  return v as number;
}

/** Python's round(): the preprocessing centres its crop with it. */
function roundHalfEven(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d !== 0.5) return Math.round(x);
  return f % 2 === 0 ? f : f + 1;
}

/**
 * The image as the model sees it, in colour: shorter side resized to `resizeSize`, centre crop of
 * `imgSize` (the crop of the model's preprocessing), as 8-bit RGB.
 */
async function modelView(image: string | Buffer, pre: Pick<PreprocessOptions, 'imgSize' | 'resizeSize'>): Promise<Buffer> {
  const crop = pre.imgSize;
  const resize = pre.resizeSize ?? crop;
  try {
    const decoded = await sharp(image, { failOn: 'warning', autoOrient: true })
      .removeAlpha()
      .toColourspace('srgb')
      .raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true });
    const { width, height, channels } = decoded.info;
    const [rw, rh] = resizedSize(width, height, resize);
    return await sharp(decoded.data, { raw: { width, height, channels } })
      .resize(rw, rh, { kernel: 'cubic', fit: 'fill' })
      .extract({ left: roundHalfEven((rw - crop) / 2), top: roundHalfEven((rh - crop) / 2), width: crop, height: crop })
      .toColourspace('srgb')
      .raw({ depth: 'uchar' })
      .toBuffer();
  } catch (err) {
    const what = typeof image === 'string' ? `image file ${image}` : `image from buffer of ${image.length} bytes`;
    throw new InputError(`cannot decode ${what}: ${(err as Error).message}`, { cause: err });
  }
}

/** Render options with their defaults filled in; throws OptionsError naming a bad one. */
function checkRenderOptions(options: RenderOptions, side: number): Required<RenderOptions> {
  if (options === null || typeof options !== 'object') throw new OptionsError('render options must be an object');
  return {
    gap: checkInt('gap', options.gap ?? 4, 0),
    scale: checkInt('scale', options.scale ?? Math.max(1, Math.round(224 / side)), 1),
    image: checkInt('image', options.image ?? 0, 0),
    droppedColor: checkColor('droppedColor', options.droppedColor ?? DEFAULT_DROPPED_COLOR),
    fusedColor: checkColor('fusedColor', options.fusedColor ?? DEFAULT_FUSED_COLOR),
  };
}

/**
 * Draws the masks of one image over that image: the model's crop first, then one panel per
 * dropping block with discarded patches covered and fused patches tinted.
 */
export async function renderMasks(
  image: string | Buffer,
  masks: PatchMasks,
  preprocess: Pick<PreprocessOptions, 'imgSize' | 'resizeSize'>,
  options: RenderOptions = {},
): Promise<Rendering> {
  const [rows, cols] = masks.grid;
  const side = preprocess.imgSize;
  if (rows !== cols || side % rows !== 0)
    throw new OptionsError(`a ${rows}x${cols} patch grid does not tile a ${side}x${side} image`);
  const { gap, scale, image: index, droppedColor: dropped, fusedColor: fused } = checkRenderOptions(options, side);
  if (masks.blocks.length > 0 && index >= masks.batch) throw new OptionsError(`image ${index} is out of range: the masks hold ${masks.batch} image(s)`);

  const S = side * scale;
  const cell = S / rows;
  let base = await modelView(image, preprocess);
  if (scale > 1) base = await sharp(base, { raw: { width: side, height: side, channels: 3 } }).resize(S, S, { kernel: 'nearest' }).raw().toBuffer();
  const raw = { width: S, height: S, channels: 3 as const };

  // Composited panels come back with an alpha channel: keep each one's channel count.
  const panels: Array<{ data: Buffer; channels: 3 | 4 }> = [{ data: base, channels: 3 }];
  const P = rows * cols;
  for (const b of masks.blocks) {
    const m = b.mask.subarray(index * P, (index + 1) * P);
    const overlay = Buffer.alloc(S * S * 4);
    for (let p = 0; p < P; p++) {
      const color = m[p] === PATCH_DROPPED ? dropped : m[p] === PATCH_FUSED ? fused : null;
      if (!color) continue;
      const y0 = Math.floor(p / cols) * cell;
      const x0 = (p % cols) * cell;
      for (let y = y0; y < y0 + cell; y++) {
        for (let x = x0; x < x0 + cell; x++) overlay.set(color, (y * S + x) * 4);
      }
    }
    const { data, info } = await sharp(base, { raw })
      .composite([{ input: overlay, raw: { width: S, height: S, channels: 4 }, blend: 'over' }])
      .raw()
      .toBuffer({ resolveWithObject: true });
    panels.push({ data, channels: info.channels as 3 | 4 });
  }
  const width = panels.length * S + (panels.length - 1) * gap;
  const png = await sharp({ create: { width, height: S, channels: 3, background: { r: 255, g: 255, b: 255 } } })
    .composite(panels.map((p, i) => ({ input: p.data, raw: { width: S, height: S, channels: p.channels }, left: i * (S + gap), top: 0 })))
    .removeAlpha()
    .png()
    .toBuffer();
  return { png, width, height: S, panel: S };
}

export interface VisualizeOptions extends ScheduleOptions, Omit<RenderOptions, 'image'> {}

export interface Visualization extends Rendering {
  masks: PatchMasks;
  /** The schedule the pass ran with. */
  schedule: Schedule;
  /** Logits of the image. */
  logits: Float32Array;
}

/** Runs one image through the model and returns its per-block patch masks and their rendering. */
export async function visualize(model: Model, image: string | Buffer, options: VisualizeOptions = {}): Promise<Visualization> {
  const { gap, scale, droppedColor, fusedColor, ...schedule } = options ?? {};
  if (model.family === 'shunted') throw new OptionsError(NOTHING_DROPPED);
  const pre = model.preprocess;
  // Fail on a bad render option before the forward pass, not after it.
  checkRenderOptions({ gap, scale, droppedColor, fusedColor }, pre.imgSize);
  const data = await preprocessImage(image, pre);
  const out = await model.forward({ data, shape: [1, model.architecture.inChans, model.imgSize, model.imgSize] }, schedule);
  const masks = patchMasks(out, modelGrid(model));
  const rendering = await renderMasks(image, masks, pre, { gap, scale, droppedColor, fusedColor });
  return { ...rendering, masks, schedule: out.schedule, logits: out.logits };
}
