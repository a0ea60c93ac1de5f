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

/** The options that take part in the spec (the rest of LoadOptions is about the backend). */
export interface SpecOptions extends ScheduleOptions {
  arch?: string;
  numHeads?: number;
  imgSize?: number;
  preprocess?: Partial<Omit<PreprocessOptions, 'imgSize'>>;
  labels?: readonly string[];
}

export interface ModelSpec {
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

/**
 * Which named architecture or head count to infer with. A head count given in the options rules out
 * the card's and metadata's arch names (they could contradict it); a card's head count applies only
 * when no arch name is known.
 */
function architectureRequest(metadata: Record<string, string>, card: ModelCard | null, options: SpecOptions): InferOptions {
  const arch = options.arch ?? (options.numHeads === undefined ? card?.arch ?? metadata.arch : undefined);
  return { arch, numHeads: options.numHeads ?? (arch === undefined ? card?.numHeads : undefined) };
}

/** The architecture as far as the tensors tell; numHeads is null when nothing says it. */
export type InspectedArchitecture = Omit<Architecture, 'numHeads'> & { numHeads: number | null; imgSize: number };

/**
 * The architecture without options, for describing a checkpoint: one whose head count nothing
 * determines still reports its dimensions (numHeads null); one evit cannot run gives `error`.
 */
export function describeArchitecture(
  checkpoint: Checkpoint, card: ModelCard | null,
): { architecture: InspectedArchitecture | null; error?: string; variant: VariantInfo } {
  const { tensors, info } = toDeitLayout(checkpoint.tensors);
  const withImg = (a: Architecture, heads: number | null): InspectedArchitecture => ({ ...a, numHeads: heads, imgSize: a.gridSize[0] * a.patchSize });
  try {
    try {
      const a = inferArchitecture(tensors, architectureRequest(checkpoint.metadata, card, {}));
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

/**
 * Everything loadModel needs to know about the model, checked.
 * @throws WeightsError for tensors, metadata or a card that do not describe a model evit runs
 * @throws OptionsError for options that do not fit the model
 */
export function resolveModelSpec(checkpoint: Checkpoint, card: ModelCard | null, options: SpecOptions, source: string): ModelSpec {
  // DeiT III (LayerScale, no class-token position embedding) runs as the equivalent DeiT.
  const { tensors, info } = toDeitLayout(checkpoint.tensors);
  const defaults = { ...checkpointDefaults(checkpoint.metadata, source), ...definedOnly(card?.schedule ?? {}) };
  const arch = inferArchitecture(tensors, architectureRequest(checkpoint.metadata, card, options));

  if (options.labels !== undefined && options.labels.length !== arch.numClasses)
    throw new OptionsError(`labels has ${options.labels.length} names but the model has ${arch.numClasses} classes`);
  if (options.labels === undefined && card?.labels !== undefined && card.labels.length !== arch.numClasses)
    throw new WeightsError(`model card ${card.file} has ${card.labels.length} labels but the model has ${arch.numClasses} classes`);
  if (card?.preprocess.channels !== undefined && card.preprocess.channels !== arch.inChans)
    throw new WeightsError(`model card ${card.file} says ${card.preprocess.channels} channels but the weights take ${arch.inChans}`);

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

  const cardPreprocess = definedOnly(card?.preprocess ?? {});
  // A card's resize was chosen for its input size; with another imgSize, keep only its crop fraction.
  if (card?.imgSize !== undefined && imgSize !== card.imgSize && cardPreprocess.resizeSize !== undefined) {
    cardPreprocess.cropPct ??= Math.min(1, card.imgSize / cardPreprocess.resizeSize);
    delete cardPreprocess.resizeSize;
  }
  const preprocess = resolvePreprocess({ ...cardPreprocess, ...definedOnly(options.preprocess ?? {}), imgSize, channels: arch.inChans as 1 | 3 });

  return {
    architecture: arch, variant: info, tensors, imgSize, grid, schedule, preprocess, labels: options.labels ?? card?.labels ?? null,
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
