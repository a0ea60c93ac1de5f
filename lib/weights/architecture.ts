/**
 * Infers a DeiT/ViT architecture from timm-named tensors and checks that
 * every tensor the forward pass needs is present with the right shape.
 */
import { OptionsError, WeightsError } from '../errors';
import type { TensorMap } from './safetensors';

/** The model dimensions a checkpoint describes. */
export interface Architecture {
  /** Token width C. */
  embedDim: number;
  /** Number of transformer blocks. */
  depth: number;
  /** Attention heads per block (embedDim / numHeads is the head dim). */
  numHeads: number;
  /** Square patch side in pixels. */
  patchSize: number;
  /** Input image channels. */
  inChans: number;
  /** [rows, cols] of the checkpoint's pos_embed grid. */
  gridSize: [number, number];
  /** Classifier outputs. */
  numClasses: number;
  /** MLP hidden width. */
  mlpHidden: number;
  /** The named architecture the checkpoint matched, or null. */
  arch: string | null;
}

/** Dimensions of a named architecture. */
export interface NamedArch {
  embedDim: number;
  depth: number;
  numHeads: number;
  patchSize: number;
}

/** The DeiT architectures released by the DeiT and EViT authors. */
export const NAMED_ARCHS = Object.freeze({
  deit_tiny_patch16_224: Object.freeze({ embedDim: 192, depth: 12, numHeads: 3, patchSize: 16 }),
  deit_small_patch16_224: Object.freeze({ embedDim: 384, depth: 12, numHeads: 6, patchSize: 16 }),
  deit_base_patch16_224: Object.freeze({ embedDim: 768, depth: 12, numHeads: 12, patchSize: 16 }),
}) satisfies Readonly<Record<string, Readonly<NamedArch>>>;

/** Names accepted by the `arch` option. */
export type ArchName = keyof typeof NAMED_ARCHS;

/** Looks up a named architecture; undefined for unknown names (own keys only). */
export function namedArch(name: string): Readonly<NamedArch> | undefined {
  return Object.prototype.hasOwnProperty.call(NAMED_ARCHS, name) ? NAMED_ARCHS[name as ArchName] : undefined;
}

const ARCH_NAMES = Object.keys(NAMED_ARCHS) as ArchName[];

/** Options for inferArchitecture. */
export interface InferOptions {
  /** A key of NAMED_ARCHS; supplies the head count and is checked against the tensors. */
  arch?: string;
  /** Explicit head count; must divide the embed dim. */
  numHeads?: number;
}

const knownNames = (): string => ARCH_NAMES.join(', ');

function shapeStr(s: readonly number[]): string {
  return `[${s.join(',')}]`;
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

/**
 * Every tensor the forward pass reads, with its exact expected shape, in
 * checkpoint order (timm names, qkv_bias true).
 */
export function requiredTensors(a: Omit<Architecture, 'numHeads' | 'arch'>): Map<string, number[]> {
  const C = a.embedDim;
  const H = a.mlpHidden;
  const P = a.gridSize[0] * a.gridSize[1];
  const m = new Map<string, number[]>();
  m.set('cls_token', [1, 1, C]);
  m.set('pos_embed', [1, 1 + P, C]);
  m.set('patch_embed.proj.weight', [C, a.inChans, a.patchSize, a.patchSize]);
  m.set('patch_embed.proj.bias', [C]);
  for (let i = 0; i < a.depth; i++) {
    const b = `blocks.${i}.`;
    m.set(`${b}norm1.weight`, [C]);
    m.set(`${b}norm1.bias`, [C]);
    m.set(`${b}attn.qkv.weight`, [3 * C, C]);
    m.set(`${b}attn.qkv.bias`, [3 * C]);
    m.set(`${b}attn.proj.weight`, [C, C]);
    m.set(`${b}attn.proj.bias`, [C]);
    m.set(`${b}norm2.weight`, [C]);
    m.set(`${b}norm2.bias`, [C]);
    m.set(`${b}mlp.fc1.weight`, [H, C]);
    m.set(`${b}mlp.fc1.bias`, [H]);
    m.set(`${b}mlp.fc2.weight`, [C, H]);
    m.set(`${b}mlp.fc2.bias`, [C]);
  }
  m.set('norm.weight', [C]);
  m.set('norm.bias', [C]);
  m.set('head.weight', [a.numClasses, C]);
  m.set('head.bias', [a.numClasses]);
  return m;
}

/**
 * Infers the architecture from the tensors and validates every required
 * tensor's presence and shape. Tensors the model does not use are ignored.
 *
 * Heads come from `opts.numHeads`, else from the named `opts.arch`, else from
 * the one named architecture whose embed dim, depth and patch size match.
 *
 * @throws WeightsError for a missing or misshapen tensor, a non-square
 *   position grid, missing blocks, or a named arch the tensors contradict
 * @throws OptionsError for an unknown arch name, a head count that does not
 *   divide the embed dim, or when the head count cannot be determined
 */
export function inferArchitecture(tensors: TensorMap, opts: InferOptions = {}): Architecture {
  const get = (name: string): number[] => {
    const t = tensors.get(name);
    if (!t) throw new WeightsError(`missing tensor ${name}`);
    return t.shape;
  };
  const expectRank = (name: string, shape: number[], rank: number, pattern: string): void => {
    if (shape.length !== rank || shape.some((d) => !Number.isSafeInteger(d) || d < 1)) {
      throw new WeightsError(`tensor ${name} has shape ${shapeStr(shape)}, expected ${pattern}`);
    }
  };

  // Validate the options first: they do not depend on the tensors.
  if (opts.numHeads !== undefined && (!Number.isSafeInteger(opts.numHeads) || opts.numHeads < 1)) {
    throw new OptionsError(`numHeads must be a positive integer, got ${String(opts.numHeads)}`);
  }
  let named: Readonly<NamedArch> | undefined;
  if (opts.arch !== undefined) {
    named = namedArch(opts.arch);
    if (!named) throw new OptionsError(`unknown arch "${String(opts.arch)}"; known archs: ${knownNames()}`);
  }

  const cls = get('cls_token');
  expectRank('cls_token', cls, 3, '[1,1,C]');
  if (cls[0] !== 1 || cls[1] !== 1) throw new WeightsError(`tensor cls_token has shape ${shapeStr(cls)}, expected [1,1,C]`);
  const embedDim = cls[2]!;

  const pw = get('patch_embed.proj.weight');
  expectRank('patch_embed.proj.weight', pw, 4, `[${embedDim},inChans,p,p]`);
  if (pw[0] !== embedDim || pw[2] !== pw[3]) {
    throw new WeightsError(`tensor patch_embed.proj.weight has shape ${shapeStr(pw)}, expected [${embedDim},inChans,p,p]`);
  }
  const inChans = pw[1]!;
  const patchSize = pw[2]!;

  const pos = get('pos_embed');
  expectRank('pos_embed', pos, 3, `[1,1+P,${embedDim}]`);
  if (pos[0] !== 1 || pos[2] !== embedDim || pos[1]! < 2) {
    throw new WeightsError(`tensor pos_embed has shape ${shapeStr(pos)}, expected [1,1+P,${embedDim}] with P >= 1`);
  }
  const numPatches = pos[1]! - 1;
  const side = Math.round(Math.sqrt(numPatches));
  if (side * side !== numPatches) {
    const distilled = tensors.has('dist_token') ? ' (the checkpoint has a dist_token: distilled DeiT is not supported)' : '';
    throw new WeightsError(
      `tensor pos_embed has shape ${shapeStr(pos)}: ${numPatches} patch positions after the class token is not a perfect square${distilled}`,
    );
  }

  const blockIds = new Set<number>();
  for (const name of tensors.keys()) {
    const m = /^blocks\.(\d+)\./.exec(name);
    if (m) blockIds.add(Number(m[1]));
  }
  if (blockIds.size === 0) throw new WeightsError('no transformer blocks found (no tensors named blocks.N.*)');
  const depth = Math.max(...blockIds) + 1;
  for (let i = 0; i < depth; i++) {
    if (!blockIds.has(i)) {
      throw new WeightsError(`missing block blocks.${i}: blocks must be numbered 0..${depth - 1} without gaps`);
    }
  }

  const fc1 = get('blocks.0.mlp.fc1.weight');
  expectRank('blocks.0.mlp.fc1.weight', fc1, 2, `[hidden,${embedDim}]`);
  const mlpHidden = fc1[0]!;

  const head = get('head.weight');
  expectRank('head.weight', head, 2, `[numClasses,${embedDim}]`);
  const numClasses = head[0]!;

  const dims = { embedDim, depth, patchSize, inChans, gridSize: [side, side] as [number, number], numClasses, mlpHidden };
  for (const [name, expected] of requiredTensors(dims)) {
    const t = tensors.get(name);
    if (!t) throw new WeightsError(`missing tensor ${name}`);
    if (!sameShape(t.shape, expected)) {
      throw new WeightsError(`tensor ${name} has shape ${shapeStr(t.shape)}, expected ${shapeStr(expected)}`);
    }
    let numel = 1;
    for (const d of expected) numel *= d;
    if (t.data.length !== numel) {
      throw new WeightsError(`tensor ${name} has ${t.data.length} values, shape ${shapeStr(expected)} needs ${numel}`);
    }
  }

  // Heads.
  const matches = (a: Readonly<NamedArch>): boolean =>
    a.embedDim === embedDim && a.depth === depth && a.patchSize === patchSize;
  if (named && !matches(named)) {
    const diffs: string[] = [];
    if (named.embedDim !== embedDim) diffs.push(`embed dim ${embedDim} (expected ${named.embedDim})`);
    if (named.depth !== depth) diffs.push(`depth ${depth} (expected ${named.depth})`);
    if (named.patchSize !== patchSize) diffs.push(`patch size ${patchSize} (expected ${named.patchSize})`);
    throw new WeightsError(`checkpoint does not match arch ${opts.arch}: ${diffs.join(', ')}`);
  }
  let numHeads: number;
  let arch: string | null;
  if (opts.numHeads !== undefined) {
    numHeads = opts.numHeads;
    if (embedDim % numHeads !== 0) {
      throw new OptionsError(`numHeads ${numHeads} does not divide embed dim ${embedDim}`);
    }
    if (named && named.numHeads !== numHeads) {
      throw new OptionsError(`numHeads ${numHeads} contradicts arch ${opts.arch}, which has ${named.numHeads} heads`);
    }
    arch = opts.arch
      ?? ARCH_NAMES.find((k) => matches(NAMED_ARCHS[k]) && NAMED_ARCHS[k].numHeads === numHeads)
      ?? null;
  } else if (named) {
    numHeads = named.numHeads;
    arch = opts.arch!;
  } else {
    const found = ARCH_NAMES.filter((k) => matches(NAMED_ARCHS[k]));
    if (found.length !== 1) {
      throw new OptionsError(
        `cannot infer the number of attention heads for embed dim ${embedDim}, depth ${depth}, patch size ${patchSize}: ` +
          `pass \`arch\` (one of ${knownNames()}) or \`numHeads\``,
      );
    }
    const name = found[0]!;
    arch = name;
    numHeads = NAMED_ARCHS[name].numHeads;
  }

  return { ...dims, numHeads, arch };
}
