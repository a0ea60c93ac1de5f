/**
 * The production binding's JS-visible shape: what `new binding.Model(...)`, `forward()` and
 * `backendInfo()` take and return. Internal: the public API is in model.ts. Test-only exports are
 * typed apart, in testing.ts, as they exist only in the test flavour of the addon.
 */
import type { AddonInfo } from './loader';
import type { NativeTesting } from './testing';

/** A DeiT/EViT model (the family when `family` is absent). */
export interface NativeConfig {
  family?: 'deit';
  embedDim: number;
  depth: number;
  numHeads: number;
  patchSize: number;
  inChans: number;
  gridH: number;
  gridW: number;
  numClasses: number;
  mlpHidden: number;
  eps?: number;
}

/** One stage of a Shunted Transformer. */
export interface NativeShuntedStage {
  dim: number;
  depth: number;
  /** Even where srRatio > 1: the heads split in two groups. */
  heads: number;
  /** 1, or even (the groups aggregate keys at srRatio and srRatio / 2). */
  srRatio: number;
  mlpHidden: number;
}

/**
 * A Shunted Transformer (tools/reference/SHUNTED.md): every stage's token grid must be divisible
 * by its sr ratio. Its tensors are the authors' names with the stem BatchNorms folded into their
 * convolutions; its forward() takes empty keep/fuse arrays and returns no kept tokens.
 */
export interface NativeShuntedConfig {
  family: 'shunted';
  stages: NativeShuntedStage[];
  numConv: number;
  inChans: number;
  /** Channels of the stem convolutions; default 64. */
  stemWidth?: number;
  imgH: number;
  imgW: number;
  numClasses: number;
}

export interface NativeKept {
  block: number;
  /** Tokens kept after the block, class token excluded. */
  perImage: number;
  /** [batch, perImage] origins: patch index, or -1-L for a token fused at block L. */
  tokens: Int32Array;
}

/** Per-channel statistics, in [0, 1] units, of uint8 input. */
export interface NativeNormalize {
  mean: Float32Array;
  std: Float32Array;
}

export interface NativeForwardResult {
  logits: Float32Array;
  kept: NativeKept[];
  /** With profile: ms per slot, backendInfo().profileSlots.model first, then .block for every block (.shunted's for a Shunted model). */
  profile?: Float64Array;
}

/** Compute type of the GEMMs and attention on CUDA (accumulation, softmax and the residual stream stay fp32). */
export type Precision = 'f32' | 'f16' | 'bf16';

export interface NativeModel {
  /**
   * keep[i] < 0: block i runs dense; else it keeps keep[i] tokens (+1 fused when fuse[i]).
   * images: float32 [B, C, H, W], normalised; or uint8 pixels [B, C, H, W] with `normalize`, the
   * per-channel mean and std (one float each per channel) that turn value v of channel c into
   * ((v / 255) - mean[c]) / std[c], float32 arithmetic, normalised natively (CUDA: on the device).
   */
  forward(
    images: Float32Array, batch: number, keep: Int32Array, fuse: Uint8Array, profile?: boolean,
  ): Promise<NativeForwardResult>;
  forward(
    images: Uint8Array, batch: number, keep: Int32Array, fuse: Uint8Array, profile: boolean,
    normalize: NativeNormalize,
  ): Promise<NativeForwardResult>;
  dispose(): void;
  readonly backend: 'cpu' | 'cuda';
  /** Compute type of the GEMMs and attention: always 'f32' on the CPU. */
  readonly precision: Precision;
  readonly disposed: boolean;
  readonly weightBytes: number;
}

export interface NativeModelOptions {
  /** CPU pool size (process-wide, fixed by the first model). */
  threads?: number;
  /** Backend that runs the model; default 'cpu'. Resolving 'auto' is the TypeScript layer's job. */
  device?: 'cpu' | 'cuda';
  /** CUDA only; the CPU backend accepts only 'f32'. Default 'bf16'. */
  precision?: Precision;
  /** CUDA: images per pass the activation arenas are sized for (larger batches run in chunks). Default 64. */
  maxBatch?: number;
  /** CUDA: execution contexts, i.e. batches that can be in flight at once. Default 2. */
  streams?: number;
}

export interface CudaDeviceInfo {
  name: string;
  computeCapability: string;
  memoryBytes: number;
}

/** The binding's bounds on what it accepts: the one source of these numbers. */
export interface NativeLimits {
  /** Images per forward() call; also the upper bound of the CUDA `maxBatch` option. */
  maxBatch: number;
  /** CPU pool size. */
  maxThreads: number;
  /** CUDA execution contexts (the `streams` option). */
  maxStreams: number;
  /** Image tokens per image: the patch grid of the largest input size. */
  maxPatches: number;
}

/** Names of the entries of NativeForwardResult.profile: the model slots, then the block slots per block. */
export interface NativeProfileSlots {
  model: readonly string[];
  block: readonly string[];
  /** A Shunted model's own slots (model, then block per block over all stages). */
  shunted: { model: readonly string[]; block: readonly string[] };
}

/** What the addon itself reports (backendInfo() without the loader's `addon`). */
export interface NativeBackendInfo {
  /** simd: the widest vector path evit's own CPU kernels take (capped by EVIT_CPU_ISA). */
  cpu: { threads: number; blas: string; blasCore: string; simd: 'avx512' | 'avx2' | 'scalar' };
  cuda: {
    compiled: boolean;
    available: boolean;
    reason: string | null;
    driverVersion: number;
    runtimeVersion: number;
    devices: CudaDeviceInfo[];
  };
  limits: NativeLimits;
  profileSlots: NativeProfileSlots;
}

export interface BackendInfo extends NativeBackendInfo {
  /** The addon file in use and where it came from (added by the loader, not the addon). */
  addon: AddonInfo;
}

export interface NativeBinding {
  Model: new (config: NativeConfig | NativeShuntedConfig, tensors: Record<string, Float32Array>, options?: NativeModelOptions) => NativeModel;
  backendInfo(): NativeBackendInfo;
  /** Single ops and host checks for tests and benchmarks: only in the test flavour of the addon. */
  testing?: NativeTesting;
}
