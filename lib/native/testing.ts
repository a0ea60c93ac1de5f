/**
 * binding.testing: single ops and host-side checks for the tests and microbenchmarks. Only the test
 * flavour of the addon (`npm run build`, -DEVIT_TESTING=ON) has it; the shipped binary does not, and
 * nothing under lib/ calls it.
 */
import type { Precision } from './types';

/** Single ops of the CPU backend. Synchronous. */
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

/**
 * Single CUDA kernels, for the GPU tests: fp32 in, `precision` on the device, fp32 out. Synchronous.
 * Every call throws code EVIT_NO_CUDA_DEVICE without a device.
 */
export interface NativeCudaOps {
  layerNorm(
    x: Float32Array, rows: number, C: number, w: Float32Array, b: Float32Array, eps: number, precision: Precision,
  ): Float32Array;
  /**
   * 'residual' adds into `residual` and 'float' writes fp32; path forces the SIMT or tensor-core GEMM
   * ('auto' may split K, as in the model); `tiling` (path 'mma') forces its tiling and split count (1-4).
   */
  linear(
    x: Float32Array, M: number, K: number, W: Float32Array, b: Float32Array, N: number,
    epilogue: 'bias' | 'gelu' | 'residual' | 'float' | 'relu', precision: Precision, residual?: Float32Array,
    path?: 'auto' | 'simt' | 'mma', tiling?: { tiling: '128x128' | '128x64' | '64x64'; splits?: number },
  ): Float32Array;
  /** probs: [B, heads, N], softmax row 0 of every head; path forces the SIMT or tensor-core kernel. */
  attention(
    qkv: Float32Array, B: number, N: number, heads: number, headDim: number, withProbs: boolean, precision: Precision,
    path?: 'auto' | 'simt' | 'mma',
  ): { out: Float32Array; probs?: Float32Array };
  topkGatherFuse(
    x: Float32Array, probs: Float32Array, B: number, N: number, heads: number, C: number, k: number, fuse: boolean,
    originsIn?: Int32Array, fusedOrigin?: number,
  ): { out: Float32Array; origins: Int32Array };
  patchify(
    img: Float32Array, B: number, inChans: number, gh: number, gw: number, p: number, precision: Precision,
  ): Float32Array;
  assembleTokens(
    patches: Float32Array, cls: Float32Array, pos: Float32Array, B: number, P: number, C: number,
  ): Float32Array;
  /** x rounded to `precision` on the device. */
  convert(x: Float32Array, precision: Precision): Float32Array;
}

/** Coverage counts of a tiling: outputs written never (Missed), twice or more (Repeated), or out of range (Outside). */
export type TilingCoverage<P extends string> = Record<`${P}Elements` | `${P}Missed` | `${P}Repeated` | `${P}Outside`, number>;

/** The CUDA kernels' host-testable logic run on the CPU (no device needed). */
export interface NativeCudaHost {
  /** topkGatherFuse's ranking: rank keys sorted by its bitonic network. */
  topk(scores: Float32Array, B: number, M: number, k: number): Int32Array;
  /** topkGatherFuse's head mean of probs [B, heads, N], class column dropped: [B, N-1]. */
  headMean(probs: Float32Array, B: number, heads: number, N: number): Float32Array;
  gelu(x: Float32Array): Float32Array;
  /** splits (default 1): the k coverage is over split-K's ranges; `splits` reports how many are used. */
  mmaTiling(
    M: number, N: number, K: number, shape: '128x128' | '128x64' | '64x64', splits?: number,
  ): TilingCoverage<'out' | 'k'> & {
    fragmentErrors: number; pairErrors: number; bankConflicts: number; loadMissed: number; loadRepeated: number;
    splits: number; emptySplits: number;
  };
  simtTiling(M: number, N: number): TilingCoverage<'out' | 'load'>;
  attentionTiling(N: number, headDim: number): TilingCoverage<'out' | 'score'>;
  attentionMmaTiling(N: number, headDim: number): TilingCoverage<'out'> & {
    fragmentErrors: number; bankConflicts: number; stagingErrors: number; scoreGaps: number; probGaps: number;
  };
}

export interface NativeTesting {
  ops: NativeOps;
  /** Present only when the addon was built with CUDA. */
  cudaOps?: NativeCudaOps;
  cudaHost: NativeCudaHost;
}
