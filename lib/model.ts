/**
 * The public model: load a checkpoint, run batches, classify images.
 */
import * as path from 'node:path';
import { DisposedError, InputError, OptionsError, WeightsError } from './errors';
import {
  callNative, callNativeAsync, loadBinding, nativeLimits, profileSlots, type NativeModel, type NativeNormalize, type Precision,
} from './native';
import { cudaSettings, resolveDevice, type DeviceOption } from './device';
import { readNpy } from './npy';
import { preprocessBatch, preprocessPixels, type PreprocessOptions } from './preprocess';
import { keepSchedule, type Schedule, type ScheduleOptions } from './schedule';
import { checkNoDropSchedule, readCardFor, resolveModelSpec, type ModelSpec, type ShuntedModelSpec } from './spec';
import { checkImageTensor, checkPixelTensor, firstNonFinite, isPixelTensor, type ImageShape, type ImageTensor, type Tensor4D } from './tensor';
import { classifications, inputName, type Classification } from './classification';
import { intUpTo, positiveInt } from './validate';
import { requiredTensors, type Architecture } from './weights/architecture';
import { resizePosEmbed } from './weights/posEmbed';
import { BUNDLED_MODEL } from './bundled';
import { readCheckpoint } from './weights/checkpoint';
import {
  requiredShuntedTensors, shuntedNativeConfig, shuntedNativeTensors, shuntedStageGrids, type ShuntedArchitecture,
} from './weights/shunted';

export type { ImageTensor, PixelTensor, Tensor4D } from './tensor';
export type { Classification, TopClass } from './classification';

export interface LoadOptions extends ScheduleOptions {
  /** Named architecture (supplies the head count), e.g. 'deit_small_patch16_224' or 'shunted_t'. */
  arch?: string;
  /**
   * Attention heads, when the checkpoint matches no named architecture: one count for DeiT, one per
   * stage for a Shunted Transformer (e.g. [2, 4, 8, 16]).
   */
  numHeads?: number | readonly number[];
  /**
   * Input side in pixels. DeiT: the position embedding is resized to it (bicubic); default the
   * checkpoint's. Shunted Transformer: every stage's token grid must be divisible by its sr ratio
   * (224, 256, ...); default 224.
   */
  imgSize?: number;
  /**
   * Backend: 'cpu', 'cuda' (DeviceError when CUDA cannot run here), or 'auto' (CUDA when a usable
   * device is present, else the CPU). Default: the EVIT_DEVICE environment variable, else 'auto'.
   */
  device?: DeviceOption;
  /** CUDA compute type of GEMMs and attention: 'bf16' (default), 'f16' or 'f32'. The CPU computes in f32. */
  precision?: Precision;
  /** CUDA: images per pass the device buffers are sized for; larger batches run in chunks. Default 64. */
  maxBatch?: number;
  /** CUDA: batches that can be in flight at once, each with its own stream and buffers. Default 2. */
  streams?: number;
  /** CPU threads for the process-wide pool (fixed by the first model loaded). Default: one per core. */
  threads?: number;
  /** Preprocessing for classify(); imgSize is taken from the model. */
  preprocess?: Partial<Omit<PreprocessOptions, 'imgSize'>>;
  /** Class names, indexed by class. */
  labels?: readonly string[];
  /**
   * Model card (config.json) with preprocessing, labels and the default schedule. Default: the
   * `config.json` beside the weights, when there is one; `false` ignores it. Explicit options win.
   */
  card?: string | false;
}

export interface KeptTokens {
  /** The block after whose attention the tokens were reorganised. */
  block: number;
  /** [batch, perImage] origins: original patch index 0..P-1, or -1-L for a token fused at block L. */
  tokens: Int32Array;
  shape: [number, number];
}

export interface ForwardOptions extends ScheduleOptions {
  /** Time every op of the pass (adds a clock read per op). */
  profile?: boolean;
}

/** The per-block ops of a profile: the names backendInfo().profileSlots.block lists, as a type. */
export type BlockOp = 'ln1' | 'qkv' | 'attention' | 'proj' | 'reorganise' | 'ln2' | 'fc1' | 'fc2';

/** Wall time of each op of one forward pass, in ms. `reorganise` is top-k plus gather and fusion. */
export interface ForwardProfile {
  patchEmbed: number;
  head: number;
  blocks: Array<{ block: number; tokens: number } & Record<BlockOp, number>>;
}

/**
 * The per-block ops of a Shunted Transformer's profile (backendInfo().profileSlots.shunted.block):
 * `kv` is the sr convolutions with their LayerNorm and GELU, the kv GEMMs and the local convolutions;
 * `dwconv` is the MLP's depthwise convolution with its add and GELU.
 */
export type ShuntedBlockOp = 'norm1' | 'q' | 'kv' | 'attention' | 'proj' | 'norm2' | 'fc1' | 'dwconv' | 'fc2';

/** A Shunted Transformer's profile: `stem` and `patchEmbed` (stages 2-4), stage norms, head; blocks of every stage in order. */
export interface ShuntedForwardProfile {
  family: 'shunted';
  stem: number;
  patchEmbed: number;
  stageNorm: number;
  head: number;
  blocks: Array<{ block: number; stage: number; tokens: number } & Record<ShuntedBlockOp, number>>;
}

export interface ForwardOutput {
  /** [batch, classes] row-major. */
  logits: Float32Array;
  shape: [number, number];
  kept: KeptTokens[];
  /** The schedule this batch ran with. */
  schedule: Schedule;
  /** With `profile: true`: a ForwardProfile for DeiT, a ShuntedForwardProfile (family 'shunted') for a Shunted model. */
  profile?: ForwardProfile | ShuntedForwardProfile;
}

export interface ClassifyOptions extends ScheduleOptions {
  /** How many classes to report per image. Default 5 (at most the class count). */
  top?: number;
}

export class Model {
  /** 'deit' (DeiT/EViT, DeiT III) or 'shunted' (Shunted Transformer), told by the checkpoint's tensor names. */
  readonly family: 'deit' | 'shunted';
  readonly architecture: Architecture | ShuntedArchitecture;
  readonly imgSize: number;
  readonly schedule: Schedule;
  readonly labels: readonly string[] | null;
  readonly preprocess: Required<PreprocessOptions>;
  /** Why the model does not run on CUDA (e.g. 'no CUDA device found'); null when it does. */
  readonly backendReason: string | null;
  #native: NativeModel | null;
  #scheduleOptions: ScheduleOptions;
  #imageShape: ImageShape;

  /** @internal use loadModel() */
  constructor(native: NativeModel,
    spec: Pick<ModelSpec, 'architecture' | 'imgSize' | 'schedule' | 'preprocess' | 'labels'> | Pick<ShuntedModelSpec, 'family' | 'architecture' | 'imgSize' | 'schedule' | 'preprocess' | 'labels'>,
    backendReason: string | null = null) {
    this.#native = native;
    this.backendReason = backendReason;
    this.family = 'family' in spec ? spec.family : 'deit';
    this.architecture = spec.architecture;
    this.imgSize = spec.imgSize;
    this.#scheduleOptions = spec.schedule;
    this.schedule = this.scheduleFor({});
    this.preprocess = spec.preprocess;
    this.labels = spec.labels;
    this.#imageShape = { inChans: spec.architecture.inChans, imgSize: spec.imgSize, maxBatch: nativeLimits().maxBatch };
  }

  /** 'cpu' or 'cuda'. */
  get backend(): 'cpu' | 'cuda' {
    return this.#alive().backend;
  }

  /** Compute type of GEMMs and attention: 'f32' on the CPU, the `precision` option on CUDA. */
  get precision(): Precision {
    return this.#alive().precision;
  }

  get disposed(): boolean {
    return this.#native === null;
  }

  /** Image tokens entering the first block (a Shunted Transformer: its first stage's grid). */
  get numPatches(): number {
    if (this.#shunted()) {
      const [h, w] = shuntedStageGrids(this.imgSize)[0]!;
      return h * w;
    }
    const g = this.imgSize / (this.architecture as Architecture).patchSize;
    return g * g;
  }

  /**
   * The schedule a call with these overrides would run (defaults from loadModel). A Shunted
   * Transformer drops nothing: its schedule is empty, and overrides that would drop are refused.
   */
  scheduleFor(overrides: ScheduleOptions): Schedule {
    if (this.#shunted()) {
      checkNoDropSchedule(overrides ?? {}, '');
      return keepSchedule(0, this.numPatches, { keepRate: 1, dropLoc: [], fuse: overrides?.fuse ?? this.#scheduleOptions.fuse });
    }
    const o = { ...this.#scheduleOptions };
    if (overrides.keepCounts !== undefined) delete o.keepRate;
    if (overrides.keepRate !== undefined) delete o.keepCounts;
    for (const [k, v] of Object.entries(overrides)) if (v !== undefined) (o as Record<string, unknown>)[k] = v;
    return keepSchedule((this.architecture as Architecture).depth, this.numPatches, o);
  }

  /**
   * Runs a preprocessed batch [B, C, H, W]: float32 values already normalised (Tensor4D), or uint8
   * pixels with their mean and std (PixelTensor, from preprocessPixels()), which the backend
   * normalises itself, on the GPU with CUDA, to the same bits. Schedule options override the
   * model's for this call. The addon copies the input when the call is made: the caller may
   * reuse, transfer or resize it at once.
   */
  async forward(input: ImageTensor, options: ForwardOptions = {}): Promise<ForwardOutput> {
    this.#alive();
    const { profile = false, ...scheduleOptions } = options ?? {};
    if (isPixelTensor(input)) {
      const { batch, mean, std } = checkPixelTensor(input, this.#imageShape, this.preprocess);
      return this.#run(input.data, batch, this.scheduleFor(scheduleOptions), profile === true, { mean, std });
    }
    const batch = checkImageTensor(input as Tensor4D, this.#imageShape);
    return this.#run(input.data as Float32Array, batch, this.scheduleFor(scheduleOptions), profile === true);
  }

  /** One native pass over a batch already checked: float32, or uint8 with its statistics. */
  async #run(data: Float32Array | Uint8Array, batch: number, schedule: Schedule, profile: boolean,
    normalize?: NativeNormalize): Promise<ForwardOutput> {
    const native = this.#alive();
    const res = await callNativeAsync(() => data instanceof Float32Array
      ? native.forward(data, batch, schedule.keep, schedule.fuse, profile)
      : native.forward(data, batch, schedule.keep, schedule.fuse, profile, normalize!));
    return {
      logits: res.logits,
      shape: [batch, this.architecture.numClasses],
      kept: res.kept.map((k) => ({ block: k.block, tokens: k.tokens, shape: [batch, k.perImage] as [number, number] })),
      schedule,
      ...(res.profile ? { profile: this.#profile(res.profile, schedule) } : {}),
    };
  }

  #profile(raw: Float64Array, schedule: Schedule): ForwardProfile | ShuntedForwardProfile {
    if (this.#shunted()) return this.#shuntedProfile(raw);
    const slots = profileSlots();
    const out: Record<string, unknown> = {};
    slots.model.forEach((slot, i) => {
      out[slot] = raw[i]!;
    });
    const n = slots.block.length;
    const blocks = [];
    let tokens = this.numPatches;
    for (let b = 0; b < (this.architecture as Architecture).depth; b++) {
      const entry: Record<string, number> = { block: b, tokens };
      slots.block.forEach((slot, j) => {
        entry[slot] = raw[slots.model.length + b * n + j]!;
      });
      blocks.push(entry as ForwardProfile['blocks'][number]);
      tokens = schedule.tokenCounts[b]!;
    }
    out.blocks = blocks;
    return out as unknown as ForwardProfile;
  }

  #shuntedProfile(raw: Float64Array): ShuntedForwardProfile {
    const slots = profileSlots().shunted;
    const a = this.architecture as ShuntedArchitecture;
    const out: Record<string, unknown> = { family: 'shunted' };
    slots.model.forEach((slot, i) => {
      out[slot] = raw[i]!;
    });
    const grids = shuntedStageGrids(this.imgSize);
    const n = slots.block.length;
    const blocks = [];
    let b = 0;
    for (let s = 0; s < a.depths.length; s++) {
      for (let j = 0; j < a.depths[s]!; j++, b++) {
        const entry: Record<string, number> = { block: b, stage: s + 1, tokens: grids[s]![0] * grids[s]![1] };
        slots.block.forEach((slot, k) => {
          entry[slot] = raw[slots.model.length + b * n + k]!;
        });
        blocks.push(entry);
      }
    }
    out.blocks = blocks;
    return out as unknown as ShuntedForwardProfile;
  }

  #shunted(): boolean {
    return this.family === 'shunted';
  }

  /**
   * Classifies images (paths or encoded Buffers) or `.npy` files of preprocessed
   * float32 [B, C, H, W] tensors, in one batch. Results follow the input order;
   * a `.npy` input yields one result per image in it, named `file.npy[i]`.
   */
  async classify(inputs: string | Buffer | ReadonlyArray<string | Buffer>, options: ClassifyOptions = {}): Promise<Classification[]> {
    this.#alive();
    const list = Array.isArray(inputs) ? [...inputs] : [inputs as string | Buffer];
    if (list.length === 0) throw new InputError('classify needs at least one input');
    const top = positiveInt('top', options.top, 5);
    const { top: _top, ...scheduleOptions } = options;

    const names: string[] = [];
    const parts: Float32Array[] = [];
    const per = this.architecture.inChans * this.imgSize * this.imgSize;
    const images: Array<{ at: number; input: string | Buffer }> = [];
    let npyFiles = 0;
    let npyData: Float32Array | null = null;
    for (const item of list) {
      if (typeof item === 'string' && item.toLowerCase().endsWith('.npy')) {
        const t = await readNpy(item);
        const b = checkImageTensor(t, this.#imageShape, item);
        npyFiles++;
        npyData = t.data;
        for (let i = 0; i < b; i++) {
          names.push(`${item}[${i}]`);
          parts.push(t.data.subarray(i * per, (i + 1) * per));
        }
      } else if (typeof item === 'string' || Buffer.isBuffer(item)) {
        images.push({ at: parts.length, input: item });
        names.push(inputName(item));
        parts.push(new Float32Array(0));
      } else {
        throw new InputError(`classify inputs must be file paths or Buffers, got ${typeof item}`);
      }
    }
    // Before decoding anything: the images would not fit one pass.
    const { maxBatch } = this.#imageShape;
    if (parts.length > maxBatch) throw new InputError(`at most ${maxBatch} images per call, got ${parts.length}`);
    if (images.length === parts.length) {
      // Only images: their 8-bit pixels go to the backend, which normalises them (on the GPU with CUDA).
      const px = await preprocessPixels(images.map((i) => i.input), this.preprocess);
      const { mean, std } = checkPixelTensor(px, this.#imageShape, this.preprocess);
      const out = await this.#run(px.data, parts.length, this.scheduleFor(scheduleOptions), false, { mean, std });
      return classifications(names, out, top, this.labels);
    }
    let packed: Float32Array | null = null;
    if (images.length) {
      const pre = await preprocessBatch(images.map((i) => i.input), this.preprocess);
      // Mixed with .npy tensors: the images normalised here, the batch float32.
      images.forEach((img, j) => {
        parts[img.at] = pre.data.subarray(j * per, (j + 1) * per);
      });
    } else if (npyFiles === 1) {
      packed = npyData!;
    }
    const data = packed ?? new Float32Array(parts.length * per);
    if (!packed) parts.forEach((p, i) => data.set(p, i * per));
    const out = await this.#run(data, parts.length, this.scheduleFor(scheduleOptions), false);
    return classifications(names, out, top, this.labels);
  }

  /** Frees the native weights. Batches already running finish first; later calls throw DisposedError. */
  dispose(): void {
    if (this.#native) this.#native.dispose();
    this.#native = null;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.dispose();
  }

  #alive(): NativeModel {
    if (!this.#native) throw new DisposedError();
    return this.#native;
  }
}

/**
 * Loads a safetensors or PyTorch .pth checkpoint (timm tensor names; DeiT or DeiT III) and prepares it on the backend.
 * Without a path, loads the bundled Fashion-MNIST model.
 */
export async function loadModel(file: string = BUNDLED_MODEL, options: LoadOptions = {}): Promise<Model> {
  if (typeof file !== 'string' || file.length === 0) throw new OptionsError('loadModel needs a checkpoint path');
  if (options === null || typeof options !== 'object') throw new OptionsError('options must be an object');
  if (options.card !== undefined && options.card !== false && (typeof options.card !== 'string' || options.card === ''))
    throw new OptionsError(`card must be a path or false, got ${JSON.stringify(options.card)}`);
  const cuda = cudaSettings(options);
  const device = resolveDevice(options.device, loadBinding().backendInfo().cuda);
  if (device.requested === 'cpu' && options.precision !== undefined && options.precision !== 'f32')
    throw new OptionsError(`precision '${options.precision}' needs the CUDA backend; the CPU computes in f32`);
  const threads = options.threads === undefined ? undefined : intUpTo('threads', options.threads, nativeLimits().maxThreads);
  if (options.labels !== undefined && (!Array.isArray(options.labels) || !options.labels.every((l) => typeof l === 'string')))
    throw new OptionsError('labels must be an array of strings');

  const checkpoint = await readCheckpoint(path.resolve(file));
  const card = await readCardFor(file, options.card);
  const resolved = resolveModelSpec(checkpoint, card, options, file);
  if (resolved.family === 'shunted') return loadShunted(resolved, device, threads, cuda);
  const spec = resolved;
  const { architecture: arch, grid } = spec;
  const { maxPatches } = nativeLimits();
  if (grid * grid > maxPatches)
    throw new OptionsError(
      `imgSize ${spec.imgSize} makes a ${grid}×${grid} patch grid (${grid * grid} patches); the addon takes at most ` +
        `${maxPatches} (imgSize up to ${Math.floor(Math.sqrt(maxPatches)) * arch.patchSize} at patch ${arch.patchSize})`,
    );

  // Only the tensors the forward pass reads: a .pth inflates a storage when its data is first read.
  const record: Record<string, Float32Array> = {};
  for (const name of requiredTensors(arch).keys()) {
    const data = spec.tensors.get(name)!.data;
    const bad = firstNonFinite(data);
    if (bad >= 0) throw new WeightsError(`tensor ${name} holds ${data[bad]} at element ${bad}; weights must be finite numbers`);
    record[name] = data;
  }
  if (grid !== arch.gridSize[0] || grid !== arch.gridSize[1])
    record.pos_embed = resizePosEmbed(spec.tensors.get('pos_embed')!.data, arch.embedDim, arch.gridSize, [grid, grid]);

  const { Model: NativeModelClass } = loadBinding();
  const native = callNative(() => new NativeModelClass(
    {
      embedDim: arch.embedDim,
      depth: arch.depth,
      numHeads: arch.numHeads,
      patchSize: arch.patchSize,
      inChans: arch.inChans,
      gridH: grid,
      gridW: grid,
      numClasses: arch.numClasses,
      mlpHidden: arch.mlpHidden,
      eps: 1e-6,
    },
    record,
    device.backend === 'cuda' ? { threads, device: 'cuda', ...cuda } : { threads, device: 'cpu' },
  ));
  warnIfThreadsFixed(threads);
  return new Model(native, spec, device.reason);
}

function warnIfThreadsFixed(threads: number | undefined): void {
  if (threads === undefined) return;
  const inEffect = loadBinding().backendInfo().cpu.threads;
  if (inEffect !== threads)
    process.emitWarning(
      `evit: threads: ${threads} ignored; the CPU pool already runs ${inEffect} threads (fixed by the first model)`,
      { code: 'EVIT_THREADS_FIXED' },
    );
}

/** loadModel for a Shunted Transformer: stem BatchNorms folded (float64, once), then the backend the device option chose. */
function loadShunted(spec: ShuntedModelSpec, device: ReturnType<typeof resolveDevice>, threads: number | undefined,
  cuda: ReturnType<typeof cudaSettings>): Model {
  const arch = spec.architecture;
  // Every tensor the forward pass reads, BatchNorm statistics included, checked before folding.
  for (const name of requiredShuntedTensors(arch).keys()) {
    const data = spec.tensors.get(name)!.data;
    const bad = firstNonFinite(data);
    if (bad >= 0) throw new WeightsError(`tensor ${name} holds ${data[bad]} at element ${bad}; weights must be finite numbers`);
  }
  const record = shuntedNativeTensors(spec.tensors, arch);
  const { Model: NativeModelClass } = loadBinding();
  const native = callNative(() => new NativeModelClass(
    shuntedNativeConfig(arch, spec.imgSize),
    record,
    device.backend === 'cuda' ? { threads, device: 'cuda', ...cuda } : { threads, device: 'cpu' },
  ));
  warnIfThreadsFixed(threads);
  return new Model(native, spec, device.reason);
}
