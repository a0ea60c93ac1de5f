/**
 * The typed interface of the native addon, and the loader that finds it.
 * Everything here is internal: the public API is in model.ts.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { NativeError } from './errors';

export interface NativeConfig {
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

export interface NativeKept {
  block: number;
  /** Tokens kept after the block, class token excluded. */
  perImage: number;
  /** [batch, perImage] origins: patch index, or -1-L for a token fused at block L. */
  tokens: Int32Array;
}

export interface NativeForwardResult {
  logits: Float32Array;
  kept: NativeKept[];
  /** With profile: ms for [patchEmbed, head, then per block ln1, qkv, attention, proj, reorganise, ln2, fc1, fc2]. */
  profile?: Float64Array;
}

/** Order of the per-block entries of NativeForwardResult.profile. */
export const PROFILE_SLOTS = ['ln1', 'qkv', 'attention', 'proj', 'reorganise', 'ln2', 'fc1', 'fc2'] as const;

export interface NativeModel {
  /** keep[i] < 0: block i runs dense; else it keeps keep[i] tokens (+1 fused when fuse[i]). */
  forward(
    images: Float32Array, batch: number, keep: Int32Array, fuse: Uint8Array, profile?: boolean,
  ): Promise<NativeForwardResult>;
  dispose(): void;
  readonly backend: 'cpu' | 'cuda';
  readonly disposed: boolean;
  readonly weightBytes: number;
}

export interface CudaDeviceInfo {
  name: string;
  computeCapability: string;
  memoryBytes: number;
}

export interface BackendInfo {
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
}

/** Single ops of the CPU backend, exported for tests and microbenchmarks. Synchronous. */
export interface NativeOps {
  layerNorm(x: Float32Array, rows: number, C: number, w: Float32Array, b: Float32Array, eps: number): Float32Array;
  linear(
    x: Float32Array, M: number, K: number, W: Float32Array, b: Float32Array, N: number,
    epilogue: 'bias' | 'gelu' | 'residual', residual?: Float32Array,
  ): Float32Array;
  attention(
    qkv: Float32Array, B: number, N: number, heads: number, headDim: number, withScores: boolean,
  ): { out: Float32Array; scores?: Float32Array };
  topk(scores: Float32Array, B: number, M: number, k: number): Int32Array;
  gatherFuse(
    x: Float32Array, B: number, N: number, C: number, scores: Float32Array, idx: Int32Array, k: number, fuse: boolean,
  ): { out: Float32Array; origins: Int32Array };
  patchEmbed(
    img: Float32Array, B: number, inChans: number, gh: number, gw: number, p: number,
    W: Float32Array, b: Float32Array, cls: Float32Array, pos: Float32Array, C: number,
  ): Float32Array;
  gelu(x: Float32Array): Float32Array;
  /** Sustained FMA GFLOP/s of `threads` threads; 0 when the CPU lacks that width. Default: the widest it has. */
  measureFmaPeak(threads: number, seconds: number, width?: 'widest' | 'avx2' | 'avx512'): number;
}

export interface NativeBinding {
  Model: new (config: NativeConfig, tensors: Record<string, Float32Array>, options?: { threads?: number }) => NativeModel;
  backendInfo(): BackendInfo;
  ops: NativeOps;
}

let cached: NativeBinding | undefined;

/** Candidate locations of the addon, most specific first. */
export function bindingCandidates(root = path.resolve(__dirname, '..')): string[] {
  const out: string[] = [];
  if (process.env.EVIT_BINDING) out.push(path.resolve(process.env.EVIT_BINDING));
  out.push(path.join(root, 'prebuilds', `${process.platform}-${process.arch}`, 'evit.node'));
  out.push(path.join(root, 'build', 'Release', 'evit.node'));
  return out;
}

/** Loads the addon once; the error lists every place tried and why each failed. */
export function loadBinding(): NativeBinding {
  if (cached) return cached;
  const tried: string[] = [];
  for (const file of bindingCandidates()) {
    if (!fs.existsSync(file)) {
      tried.push(`${file}: not found`);
      continue;
    }
    try {
      cached = require(file) as NativeBinding;
      return cached;
    } catch (err) {
      tried.push(`${file}: ${(err as Error).message.split('\n')[0]}`);
    }
  }
  throw new NativeError(
    `could not load the evit native addon for ${process.platform}-${process.arch} (Node ${process.version}).\n` +
      `Tried:\n  ${tried.join('\n  ')}\n` +
      'Build it from source with `npm run build` (needs a C++ compiler, cmake and libopenblas-dev).',
  );
}
