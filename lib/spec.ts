/**
 * What a model is, resolved once from its three sources: the checkpoint (tensors and metadata), the
 * model card beside it, and the caller's options. Explicit options win over the card, the card over
 * the checkpoint's metadata. loadModel, `evit inspect` and `evit convert` all decide through here.
 */
import * as path from 'node:path';
import { OptionsError, WeightsError } from './errors';
import { resolvePreprocess, type PreprocessOptions } from './preprocess';
import { keepSchedule, type ScheduleOptions } from './schedule';
import { inferArchitecture, type Architecture, type InferOptions } from './weights/architecture';
import type { Checkpoint } from './weights/checkpoint';
import { toDeitLayout, type VariantInfo } from './weights/deit3';
import { checkpointDefaults } from './weights/metadata';
import { cardPathFor, readModelCard, type ModelCard } from './weights/modelCard';
import type { TensorMap } from './weights/safetensors';
import {
  SHUNTED_MAX_IMG_SIZE, inferShuntedArchitecture, isShuntedCheckpoint, validShuntedInputSize,
  type ShuntedArchitecture, type StageTuple,
} from './weights/shunted';

/** The options that take part in the spec (the rest of LoadOptions is about the backend). */
export interface SpecOptions extends ScheduleOptions {
  arch?: string;
  /** DeiT: one count; Shunted Transformer: one per stage. */
  numHeads?: number | readonly number[];
  imgSize?: number;
  preprocess?: Partial<Omit<PreprocessOptions, 'imgSize'>>;
  labels?: readonly string[];
}

export interface ModelSpec {
  family: 'deit';
  architecture: Architecture;
  variant: VariantInfo;
  /** The tensors in DeiT's layout (DeiT III folded), pos_embed still at the checkpoint's grid. */
  tensors: TensorMap;
  /** Input side in pixels, and the patch grid side it gives. */
  imgSize: number;
  grid: number;
  /** The default schedule, already checked against the model. */
  schedule: ScheduleOptions;
  preprocess: Required<PreprocessOptions>;
  labels: readonly string[] | null;
}

/** The model card a load uses: `false` none, a path that must exist, or by default config.json beside the weights if present. */
export function readCardFor(weights: string, card: string | false | undefined): Promise<ModelCard | null> {
  if (card === false) return Promise.resolve(null);
  return readModelCard(path.resolve(card ?? cardPathFor(weights)), card !== undefined);
}

/** A Shunted Transformer's spec: no position grid, no token schedule (it drops nothing). */
export interface ShuntedModelSpec {
  family: 'shunted';
  architecture: ShuntedArchitecture;
  /** The tensors as read (stem BatchNorms not yet folded). */
  tensors: TensorMap;
  imgSize: number;
  /** Always the no-drop schedule: keepRate 1, no dropping blocks. */
  schedule: ScheduleOptions;
  preprocess: Required<PreprocessOptions>;
  labels: readonly string[] | null;
}

/** The family a checkpoint's variant report names; Shunted has no DeiT III-style variants. */
export type ModelVariant = VariantInfo | { variant: 'shunted'; layerScale: null; posEmbedClassSlot: false };
const SHUNTED_VARIANT: ModelVariant = Object.freeze({ variant: 'shunted', layerScale: null, posEmbedClassSlot: false });

/**
 * Which named architecture or head count to infer with. A head count given in the options rules out
 * the card's and metadata's arch names (they could contradict it); a card's head count applies only
 * when no arch name is known.
 */
function architectureRequest(metadata: Record<string, string>, card: ModelCard | null, options: SpecOptions): {
  arch?: string; numHeads?: number | readonly number[];
} {
  const arch = options.arch ?? (options.numHeads === undefined ? card?.arch ?? metadata.arch : undefined);
  return { arch, numHeads: options.numHeads ?? (arch === undefined ? card?.numHeads : undefined) };
}

/** The DeiT request: a list of head counts is a Shunted option. */
function deitRequest(r: ReturnType<typeof architectureRequest>): InferOptions {
  if (Array.isArray(r.numHeads))
    throw new OptionsError(`numHeads ${r.numHeads.join(',')} is one count per stage, for a Shunted Transformer; this is a DeiT checkpoint, which takes one head count`);
  return r as InferOptions;
}

/** The Shunted request: one head count per stage. */
function shuntedRequest(r: ReturnType<typeof architectureRequest>): { arch?: string; numHeads?: readonly number[] } {
  if (r.numHeads !== undefined && !Array.isArray(r.numHeads))
    throw new OptionsError(`numHeads ${String(r.numHeads)}: a Shunted Transformer takes one head count per stage, e.g. 2,4,8,16`);
  return r as { arch?: string; numHeads?: readonly number[] };
}

/** The architecture as far as the tensors tell; numHeads is null when nothing says it. */
export type InspectedArchitecture = Omit<Architecture, 'numHeads'> & { numHeads: number | null; imgSize: number };
/** A Shunted Transformer's, likewise; imgSize is the released models' 224 px. */
export type InspectedShuntedArchitecture = Omit<ShuntedArchitecture, 'numHeads' | 'headDims'> & {
  numHeads: StageTuple | null; headDims: StageTuple | null; imgSize: number;
};

/**
 * The architecture without options, for describing a checkpoint: one whose head count nothing
 * determines still reports its dimensions (numHeads null); one evit cannot run gives `error`.
 */
export function describeArchitecture(
  checkpoint: Checkpoint, card: ModelCard | null,
): { architecture: InspectedArchitecture | InspectedShuntedArchitecture | null; error?: string; variant: ModelVariant } {
  if (isShuntedCheckpoint(checkpoint.tensors.keys())) return describeShunted(checkpoint, card);
  const { tensors, info } = toDeitLayout(checkpoint.tensors);
  const withImg = (a: Architecture, heads: number | null): InspectedArchitecture => ({ ...a, numHeads: heads, imgSize: a.gridSize[0] * a.patchSize });
  try {
    try {
      const a = inferArchitecture(tensors, deitRequest(architectureRequest(checkpoint.metadata, card, {})));
      return { architecture: withImg(a, a.numHeads), variant: info };
    } catch (e) {
      if (!(e instanceof OptionsError)) throw e;
      // Heads cannot be told from the tensors; one head infers the rest.
      const a = inferArchitecture(tensors, { numHeads: 1 });
      return { architecture: withImg({ ...a, arch: null }, null), variant: info };
    }
  } catch (e) {
    if (e instanceof WeightsError || e instanceof OptionsError) return { architecture: null, error: e.message, variant: info };
    throw e;
  }
}

function describeShunted(checkpoint: Checkpoint, card: ModelCard | null): ReturnType<typeof describeArchitecture> {
  try {
    try {
      const a = inferShuntedArchitecture(checkpoint.tensors, shuntedRequest(architectureRequest(checkpoint.metadata, card, {})));
      return { architecture: { ...a, imgSize: 224 }, variant: SHUNTED_VARIANT };
    } catch (e) {
      if (!(e instanceof OptionsError)) throw e;
      // Heads cannot be told from the tensors: the fewest a stage allows (2 where they split in
      // two groups, which needs an even width, else 1) infer the rest.
      const split = (s: number): boolean => checkpoint.tensors.has(`block${s}.0.attn.sr1.weight`);
      const a = inferShuntedArchitecture(checkpoint.tensors, { numHeads: [1, 2, 3, 4].map((s) => (split(s) ? 2 : 1)) });
      return { architecture: { ...a, numHeads: null, headDims: null, arch: null, imgSize: 224 }, variant: SHUNTED_VARIANT };
    }
  } catch (e) {
    if (e instanceof WeightsError || e instanceof OptionsError) return { architecture: null, error: e.message, variant: SHUNTED_VARIANT };
    throw e;
  }
}

/** Labels and card checks every family makes. */
function checkLabelsAndChannels(card: ModelCard | null, options: SpecOptions, numClasses: number, inChans: number): void {
  if (options.labels !== undefined && options.labels.length !== numClasses)
    throw new OptionsError(`labels has ${options.labels.length} names but the model has ${numClasses} classes`);
  if (options.labels === undefined && card?.labels !== undefined && card.labels.length !== numClasses)
    throw new WeightsError(`model card ${card.file} has ${card.labels.length} labels but the model has ${numClasses} classes`);
  if (card?.preprocess.channels !== undefined && card.preprocess.channels !== inChans)
    throw new WeightsError(`model card ${card.file} says ${card.preprocess.channels} channels but the weights take ${inChans}`);
}

/** Preprocessing from the card and the options, for inputs of imgSize. */
function preprocessFor(card: ModelCard | null, options: SpecOptions, imgSize: number, inChans: number): Required<PreprocessOptions> {
  const cardPreprocess = definedOnly(card?.preprocess ?? {});
  // A card's resize was chosen for its input size; with another imgSize, keep only its crop fraction.
  if (card?.imgSize !== undefined && imgSize !== card.imgSize && cardPreprocess.resizeSize !== undefined) {
    cardPreprocess.cropPct ??= Math.min(1, card.imgSize / cardPreprocess.resizeSize);
    delete cardPreprocess.resizeSize;
  }
  return resolvePreprocess({ ...cardPreprocess, ...definedOnly(options.preprocess ?? {}), imgSize, channels: inChans as 1 | 3 });
}

/**
 * Everything loadModel needs to know about the model, checked. The family (DeiT/EViT or Shunted
 * Transformer) is told by the tensor names.
 * @throws WeightsError for tensors, metadata or a card that do not describe a model evit runs
 * @throws OptionsError for options that do not fit the model
 */
export function resolveModelSpec(checkpoint: Checkpoint, card: ModelCard | null, options: SpecOptions, source: string): ModelSpec | ShuntedModelSpec {
  if (isShuntedCheckpoint(checkpoint.tensors.keys())) return resolveShuntedSpec(checkpoint, card, options, source);
  // DeiT III (LayerScale, no class-token position embedding) runs as the equivalent DeiT.
  const { tensors, info } = toDeitLayout(checkpoint.tensors);
  const defaults = { ...checkpointDefaults(checkpoint.metadata, source), ...definedOnly(card?.schedule ?? {}) };
  const arch = inferArchitecture(tensors, deitRequest(architectureRequest(checkpoint.metadata, card, options)));
  checkLabelsAndChannels(card, options, arch.numClasses, arch.inChans);

  const p = arch.patchSize;
  const imgSize = options.imgSize ?? card?.imgSize ?? arch.gridSize[0] * p;
  if (!Number.isInteger(imgSize) || imgSize < p || imgSize % p !== 0)
    throw new OptionsError(`imgSize must be a positive multiple of the patch size ${p}, got ${String(imgSize)}`);
  if (arch.gridSize[0] !== arch.gridSize[1] && options.imgSize !== undefined)
    throw new OptionsError('imgSize cannot resize a non-square position grid');
  const grid = imgSize / p;

  const schedule: ScheduleOptions = {
    keepRate: options.keepRate ?? (options.keepCounts === undefined ? defaults.keepRate : undefined),
    dropLoc: options.dropLoc ?? defaults.dropLoc,
    fuse: options.fuse ?? defaults.fuse,
    keepCounts: options.keepCounts,
  };
  // Checked now so a bad schedule fails at load, not at the first batch.
  keepSchedule(arch.depth, grid * grid, schedule);

  const preprocess = preprocessFor(card, options, imgSize, arch.inChans);

  return {
    family: 'deit', architecture: arch, variant: info, tensors, imgSize, grid, schedule, preprocess, labels: options.labels ?? card?.labels ?? null,
  };
}

/**
 * A Shunted Transformer merges keys inside attention and drops no tokens: a schedule that would
 * drop some (a keep rate below 1, dropping blocks, keep counts) is refused, never ignored.
 */
export function checkNoDropSchedule(o: ScheduleOptions, from: string, error: (m: string) => Error = (m) => new OptionsError(m)): void {
  const why = 'a Shunted Transformer drops no tokens (it aggregates keys inside attention); keepRate, dropLoc and keepCounts apply to DeiT/EViT models';
  if (o.keepRate !== undefined && o.keepRate !== 1) throw error(`${from}keepRate ${String(o.keepRate)}: ${why}`);
  if (o.dropLoc !== undefined && (!Array.isArray(o.dropLoc) || o.dropLoc.length > 0)) throw error(`${from}dropLoc ${String(o.dropLoc)}: ${why}`);
  if (o.keepCounts !== undefined && (!Array.isArray(o.keepCounts) || o.keepCounts.length > 0)) throw error(`${from}keepCounts ${String(o.keepCounts)}: ${why}`);
  if (o.fuse !== undefined && typeof o.fuse !== 'boolean') throw error(`${from}fuse must be a boolean`);
}

function resolveShuntedSpec(checkpoint: Checkpoint, card: ModelCard | null, options: SpecOptions, source: string): ShuntedModelSpec {
  const arch = inferShuntedArchitecture(checkpoint.tensors, shuntedRequest(architectureRequest(checkpoint.metadata, card, options)));
  checkLabelsAndChannels(card, options, arch.numClasses, arch.inChans);
  // What the checkpoint or its card records must not ask for a drop either.
  checkNoDropSchedule(checkpointDefaults(checkpoint.metadata, source), `${source}: __metadata__ `, (m) => new WeightsError(m));
  if (card) checkNoDropSchedule(definedOnly(card.schedule), `model card ${card.file}: `, (m) => new WeightsError(m));
  checkNoDropSchedule(options, '');

  // The released models are trained at 224 px; any size whose stage grids the sr ratios divide runs.
  const imgSize = options.imgSize ?? card?.imgSize ?? 224;
  if (!Number.isSafeInteger(imgSize) || imgSize < 1 || imgSize > SHUNTED_MAX_IMG_SIZE)
    throw new OptionsError(`imgSize must be an integer in [1, ${SHUNTED_MAX_IMG_SIZE}], got ${String(imgSize)}`);
  const size = validShuntedInputSize(arch, imgSize);
  if (!size.ok) throw new OptionsError(size.reason);

  return {
    family: 'shunted',
    architecture: arch,
    tensors: checkpoint.tensors,
    imgSize,
    schedule: { keepRate: 1, dropLoc: [], fuse: options.fuse ?? true },
    preprocess: preprocessFor(card, options, imgSize, arch.inChans),
    labels: options.labels ?? card?.labels ?? null,
  };
}

/**
 * Checks the defaults a checkpoint records (its metadata) against its architecture, as loadModel would
 * take them. Only what is recorded is checked: the default drop blocks (3, 6, 9) may not fit a shallow model.
 */
export function checkRecordedSchedule(metadata: Record<string, string>, arch: Pick<Architecture, 'depth' | 'gridSize'>, source: string): void {
  const d = checkpointDefaults(metadata, source);
  keepSchedule(arch.depth, arch.gridSize[0] * arch.gridSize[1], { keepRate: d.keepRate, dropLoc: d.dropLoc ?? [], fuse: d.fuse });
}

function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
