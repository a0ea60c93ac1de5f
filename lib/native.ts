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
  /** Compute type of the GEMMs and attention: always 'f32' on the CPU. */
  readonly precision: Precision;
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
  /** The native limits: images per forward() call, CPU pool threads, CUDA contexts per model. */
  limits: { maxBatch: number; maxThreads: number; maxStreams: number };
  /** Names of NativeForwardResult.profile's entries: the model's slots, then the block slots per block. */
  profileSlots: { model: string[]; block: string[] };
  /** The addon file in use and where it came from (added by the loader, not the addon). */
  addon: AddonInfo;
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

/** Compute type of the GEMMs and attention on CUDA (accumulation, softmax and the residual stream stay fp32). */
export type Precision = 'f32' | 'f16' | 'bf16';

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

/**
 * Single CUDA kernels, for the GPU tests: fp32 in, `precision` on the device, fp32 out. Synchronous.
 * Every call throws code EVIT_NO_CUDA in a build without CUDA, EVIT_NO_CUDA_DEVICE without a device.
 */
export interface NativeCudaOps {
  layerNorm(
    x: Float32Array, rows: number, C: number, w: Float32Array, b: Float32Array, eps: number, precision: Precision,
  ): Float32Array;
  /** 'residual' adds into `residual` and 'float' writes fp32; path forces the SIMT or tensor-core GEMM. */
  linear(
    x: Float32Array, M: number, K: number, W: Float32Array, b: Float32Array, N: number,
    epilogue: 'bias' | 'gelu' | 'residual' | 'float', precision: Precision, residual?: Float32Array,
    path?: 'auto' | 'simt' | 'mma',
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

/** The CUDA kernels' host-testable logic run on the CPU (every build, no device needed). */
export interface NativeCudaHost {
  /** topkGatherFuse's ranking: rank keys sorted by its bitonic network. */
  topk(scores: Float32Array, B: number, M: number, k: number): Int32Array;
  /** topkGatherFuse's head mean of probs [B, heads, N], class column dropped: [B, N-1]. */
  headMean(probs: Float32Array, B: number, heads: number, N: number): Float32Array;
  gelu(x: Float32Array): Float32Array;
  mmaTiling(
    M: number, N: number, K: number, shape: '128x128' | '64x64',
  ): TilingCoverage<'out' | 'k'> & {
    fragmentErrors: number; pairErrors: number; bankConflicts: number; loadMissed: number; loadRepeated: number;
  };
  simtTiling(M: number, N: number): TilingCoverage<'out' | 'load'>;
  attentionTiling(N: number, headDim: number): TilingCoverage<'out' | 'score'>;
  attentionMmaTiling(N: number, headDim: number): TilingCoverage<'out'> & {
    fragmentErrors: number; bankConflicts: number; stagingErrors: number; scoreGaps: number; probGaps: number;
  };
}

/** The test flavour's exports (built with -DEVIT_TESTING=ON, as `npm run build` does). */
export interface NativeTesting {
  ops: NativeOps;
  /** Only when the addon has the CUDA backend. */
  cudaOps?: NativeCudaOps;
  cudaHost: NativeCudaHost;
}

export interface NativeBinding {
  Model: new (config: NativeConfig, tensors: Record<string, Float32Array>, options?: NativeModelOptions) => NativeModel;
  backendInfo(): Omit<BackendInfo, 'addon'>;
  /** Absent from the shipped binary. */
  testing?: NativeTesting;
}

/** Where a candidate addon comes from: an explicit EVIT_BINDING, a source build, or the prebuilt one. */
export type AddonSource = 'EVIT_BINDING' | 'build' | 'prebuilt';

export interface AddonCandidate {
  file: string;
  source: AddonSource;
}

/** The addon in use: backendInfo().addon. */
export interface AddonInfo extends AddonCandidate {
  /** The N-API version the addon was built for, and the one this Node provides. */
  napi: number;
  nodeNapi: number;
}

/** The N-API version the addon is built against (package.json binary.napi_versions, NAPI_VERSION in the builds). */
export const ADDON_NAPI_VERSION = 8;

const SOURCE_LABEL: Record<AddonSource, string> = {
  EVIT_BINDING: 'EVIT_BINDING',
  build: 'local build',
  prebuilt: 'prebuilt binary',
};

let cached: { binding: NativeBinding; addon: AddonInfo } | undefined;

export interface PlatformId {
  /** prebuilds/ directory name: `${platform}-${arch}`. */
  dir: string;
  /** On Linux, the C library: a glibc binary cannot load on musl. */
  libc: 'glibc' | 'musl' | null;
  glibc: string | null;
}

let platform: PlatformId | undefined;

export function platformId(): PlatformId {
  if (platform) return platform;
  const dir = `${process.platform}-${process.arch}`;
  if (process.platform !== 'linux') return (platform = { dir, libc: null, glibc: null });
  // Node reports the glibc it runs on; there is none on musl.
  const report = process.report?.getReport?.() as { header?: { glibcVersionRuntime?: string } } | undefined;
  const glibc = report?.header?.glibcVersionRuntime ?? null;
  return (platform = { dir, libc: glibc ? 'glibc' : 'musl', glibc });
}

/**
 * Candidate addons, in the order they are tried. EVIT_BINDING, when set, is the only one: an explicit
 * choice that fails must not be replaced silently by another binary. Otherwise a local source build comes
 * before the prebuilt binary: it exists only when someone built from source on purpose (forced, or because
 * the prebuilt one did not load), and in a working checkout it is the code being developed.
 */
export function bindingCandidates(root = path.resolve(__dirname, '..'), env = process.env): AddonCandidate[] {
  if (env.EVIT_BINDING) return [{ file: path.resolve(env.EVIT_BINDING), source: 'EVIT_BINDING' }];
  return [
    { file: path.join(root, 'build', 'Release', 'evit.node'), source: 'build' },
    { file: path.join(root, 'prebuilds', platformId().dir, 'evit.node'), source: 'prebuilt' },
  ];
}

/** Why an addon failed to load, in words a user can act on; `message` is the loader's own. */
export function explainLoadFailure(message: string): string {
  const first = message.split('\n')[0]!.trim();
  const hints: Array<[RegExp, string]> = [
    [/GLIBC_[\d.]+'? not found/, 'this system\'s glibc is older than the one the binary was built for'],
    [/GLIBCXX_[\d.]+'? not found|CXXABI_[\d.]+'? not found/, 'this system\'s libstdc++ is older than the one the binary was built for'],
    [/file too short/, 'truncated, or not a compiled library at all'],
    [/invalid ELF header|wrong ELF class|ELF file OS ABI invalid|not a valid Win32|incompatible architecture/i, 'built for another platform or architecture'],
    [/undefined symbol: napi_/, `this Node lacks N-API functions the binary uses (it needs N-API ${ADDON_NAPI_VERSION})`],
    [/Module did not self-register/, 'not a Node-API module, or built for another Node version'],
    [/cannot open shared object file/, 'a shared library it needs is missing'],
  ];
  const hint = hints.find(([re]) => re.test(message));
  return hint ? `${first} (${hint[1]})` : first;
}

function loadCandidate(c: AddonCandidate, exists: (f: string) => boolean): { binding?: NativeBinding; error?: string } {
  if (!exists(c.file)) return { error: 'not found' };
  // dlopen of a glibc binary on musl fails with an obscure relocation error: say it plainly instead.
  if (c.source === 'prebuilt' && platformId().libc === 'musl') return { error: 'built for glibc; this system uses musl' };
  let mod: Partial<NativeBinding>;
  try {
    mod = require(c.file) as Partial<NativeBinding>;
  } catch (err) {
    // dlopen() messages start with the file name, which the report already shows.
    const message = (err as Error).message;
    return { error: explainLoadFailure(message.startsWith(`${c.file}: `) ? message.slice(c.file.length + 2) : message) };
  }
  // A file that loads but is not this addon (or an older one) must not be taken for it.
  const missing = (['Model', 'backendInfo'] as const).filter((k) => mod[k] === undefined);
  if (missing.length) return { error: `loaded, but it is not a compatible evit addon (missing ${missing.join(', ')})` };
  return { binding: mod as NativeBinding };
}

/** The error when no candidate loads: what was tried, why each failed, and how to build from source. */
export function loadFailureMessage(tried: ReadonlyArray<AddonCandidate & { error: string }>): string {
  const p = platformId();
  const where = `${p.dir}${p.libc ? ` (${p.libc}${p.glibc ? ` ${p.glibc}` : ''})` : ''}`;
  const lines = [
    `could not load the evit native addon for ${where}, Node ${process.version} (N-API ${process.versions.napi ?? '?'}).`,
    'Tried:',
    ...tried.map((t) => `  - ${SOURCE_LABEL[t.source]} ${t.file}: ${t.error}`),
    'Possible solutions:',
  ];
  if (tried.some((t) => t.source === 'EVIT_BINDING'))
    lines.push('  - EVIT_BINDING is set, so only that file was tried: unset it to use the addon that came with evit.');
  if (p.dir !== 'linux-x64' || p.libc !== 'glibc')
    lines.push(`  - Prebuilt binaries ship for linux-x64 with glibc only; on ${where} evit must be built from source.`);
  lines.push(
    '  - Build from source in your project: `npm_config_build_from_source=true npm rebuild evit`',
    '    (needs a C++17 compiler, make, python3 and OpenBLAS; on Debian/Ubuntu:',
    '    `apt-get install build-essential python3 libopenblas-dev`).',
    '  - In a clone of the evit repository: `npm run build`.',
  );
  return lines.join('\n');
}

/** Loads the addon once; the error lists every place tried and why each failed. */
export function loadBinding(): NativeBinding {
  return loadAddon().binding;
}

/** Which addon file is in use, and why it was chosen. Loads it when needed. */
export function addonInfo(): AddonInfo {
  return loadAddon().addon;
}

function loadAddon(): { binding: NativeBinding; addon: AddonInfo } {
  if (cached) return cached;
  const tried: Array<AddonCandidate & { error: string }> = [];
  const nodeNapi = Number(process.versions.napi ?? 0);
  for (const c of bindingCandidates()) {
    const r = nodeNapi < ADDON_NAPI_VERSION
      ? { error: `this Node provides N-API ${nodeNapi}; the addon needs ${ADDON_NAPI_VERSION} (Node 20 or newer)` }
      : loadCandidate(c, fs.existsSync);
    if (r.binding) {
      cached = { binding: r.binding, addon: { ...c, napi: ADDON_NAPI_VERSION, nodeNapi } };
      return cached;
    }
    tried.push({ ...c, error: r.error! });
  }
  throw new NativeError(loadFailureMessage(tried));
}
