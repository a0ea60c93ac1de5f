/**
 * Shunted Transformer checkpoints (Ren et al., CVPR 2022; the authors' SSA.py,
 * github OliverRensu/Shunted-Transformer): family detection from tensor names,
 * architecture inference from tensor shapes, and the input sizes the model takes.
 *
 * Everything but the head counts is in the tensors: stage widths, depths, MLP
 * widths, sr ratios (the sr1 kernel size, or a single `kv` where sr = 1) and the
 * stem's `num_conv` (its Sequential's index layout). Heads come from a named
 * arch or an explicit option. tools/reference/SHUNTED.md describes the model.
 */
import { OptionsError, WeightsError } from '../errors';
import { foldBatchNorm } from './batchNorm';
import type { TensorMap } from './safetensors';

export const SHUNTED_STAGES = 4;

/** Largest input side the native backend takes for this family (src/backend/shunted.cc). */
export const SHUNTED_MAX_IMG_SIZE = 4096;

/** Per-stage values, stage 1 first. */
export type StageTuple = [number, number, number, number];

/** The model dimensions a Shunted checkpoint describes. */
export interface ShuntedArchitecture {
  family: 'shunted';
  /** Token width C of each stage. */
  embedDims: StageTuple;
  /** Blocks per stage. */
  depths: StageTuple;
  /** Attention heads per stage; even wherever srRatios > 1 (two head groups). */
  numHeads: StageTuple;
  /** embedDims / numHeads. */
  headDims: StageTuple;
  /** MLP hidden width per stage (`int(C · mlp_ratio)` in SSA.py). */
  mlpHidden: StageTuple;
  /** mlpHidden / embedDims (need not be an integer). */
  mlpRatios: StageTuple;
  /** Key/value aggregation rate per stage: 8, 4, 2 (two groups at r and r/2) or 1 (plain attention). */
  srRatios: StageTuple;
  /** Extra 3×3 conv + BatchNorm + ReLU layers in the stem. */
  numConv: number;
  /** Channels of the stem convolutions (64 in SSA.py). */
  stemWidth: number;
  /** Input image channels. */
  inChans: number;
  /** Classifier outputs. */
  numClasses: number;
  /** The named architecture the checkpoint matched, or null. */
  arch: ShuntedArchName | null;
}

/** Dimensions of a released model. */
export interface NamedShuntedArch {
  embedDims: StageTuple;
  depths: StageTuple;
  numHeads: StageTuple;
  mlpRatios: StageTuple;
  srRatios: StageTuple;
  numConv: number;
}

const freezeArch = (a: NamedShuntedArch): Readonly<NamedShuntedArch> => Object.freeze(a);

/** The variants the authors registered (SSA.py: shunted_t, shunted_s, shunted_b). */
export const SHUNTED_ARCHS = Object.freeze({
  shunted_t: freezeArch({ embedDims: [64, 128, 256, 512], depths: [1, 2, 4, 1], numHeads: [2, 4, 8, 16], mlpRatios: [8, 8, 4, 4], srRatios: [8, 4, 2, 1], numConv: 0 }),
  shunted_s: freezeArch({ embedDims: [64, 128, 256, 512], depths: [2, 4, 12, 1], numHeads: [2, 4, 8, 16], mlpRatios: [8, 8, 4, 4], srRatios: [8, 4, 2, 1], numConv: 1 }),
  shunted_b: freezeArch({ embedDims: [64, 128, 256, 512], depths: [3, 4, 24, 2], numHeads: [2, 4, 8, 16], mlpRatios: [8, 8, 4, 4], srRatios: [8, 4, 2, 1], numConv: 2 }),
});

export type ShuntedArchName = keyof typeof SHUNTED_ARCHS;

const ARCH_NAMES = Object.keys(SHUNTED_ARCHS) as ShuntedArchName[];

/** Looks up a released variant; undefined for other names (own keys only). */
export function namedShuntedArch(name: string): Readonly<NamedShuntedArch> | undefined {
  return Object.prototype.hasOwnProperty.call(SHUNTED_ARCHS, name) ? SHUNTED_ARCHS[name as ShuntedArchName] : undefined;
}

/** Options for inferShuntedArchitecture. */
export interface ShuntedInferOptions {
  /** `shunted_t`, `shunted_s` or `shunted_b`: supplies the heads and is checked against the tensors. */
  arch?: string;
  /** Heads per stage, e.g. [2, 4, 8, 16]. */
  numHeads?: readonly number[];
}

/** Stem kernel sizes and the sr ratios SSA.py builds. */
const SR_RATIOS = [2, 4, 8];

/** Names only the Shunted stem and shunted attention have (PVT, which shares `block1.`/`patch_embed1.`, has none). */
const MARKER = /^(?:patch_embed1\.conv\.\d+\.|block[1-4]\.\d+\.attn\.(?:kv[12]|sr[12]|local_conv[12]?)\.)/;

/** True when the tensor names are a Shunted Transformer's (its convolutional stem or its shunted attention). */
export function isShuntedCheckpoint(names: Iterable<string>): boolean {
  for (const n of names) if (MARKER.test(n)) return true;
  return false;
}

const shapeStr = (s: readonly number[]): string => `[${s.join(',')}]`;
const listStr = (s: readonly number[]): string => s.join('/');

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

/** Dimensions requiredShuntedTensors needs. */
export type ShuntedDims = Pick<ShuntedArchitecture,
  'embedDims' | 'depths' | 'mlpHidden' | 'srRatios' | 'numConv' | 'stemWidth' | 'inChans' | 'numClasses'>;

/**
 * Every tensor the forward pass reads, with its exact shape, in the authors'
 * state-dict order. BatchNorm's int64 num_batches_tracked is not read.
 */
export function requiredShuntedTensors(a: ShuntedDims): Map<string, number[]> {
  const m = new Map<string, number[]>();
  const vec = (name: string, n: number): void => {
    m.set(`${name}.weight`, [n]);
    m.set(`${name}.bias`, [n]);
  };
  const bn = (name: string, n: number): void => {
    vec(name, n);
    m.set(`${name}.running_mean`, [n]);
    m.set(`${name}.running_var`, [n]);
  };
  const S = a.stemWidth;
  m.set('patch_embed1.conv.0.weight', [S, a.inChans, 7, 7]);
  bn('patch_embed1.conv.1', S);
  for (let j = 0; j < a.numConv; j++) {
    m.set(`patch_embed1.conv.${3 + 3 * j}.weight`, [S, S, 3, 3]);
    bn(`patch_embed1.conv.${4 + 3 * j}`, S);
  }
  const last = 3 + 3 * a.numConv;
  m.set(`patch_embed1.conv.${last}.weight`, [a.embedDims[0], S, 2, 2]);
  m.set(`patch_embed1.conv.${last}.bias`, [a.embedDims[0]]);
  vec('patch_embed1.norm', a.embedDims[0]);
  for (let s = 1; s <= SHUNTED_STAGES; s++) {
    const C = a.embedDims[s - 1];
    const F = a.mlpHidden[s - 1];
    const r = a.srRatios[s - 1];
    if (s > 1) {
      m.set(`patch_embed${s}.proj.weight`, [C, a.embedDims[s - 2], 3, 3]);
      m.set(`patch_embed${s}.proj.bias`, [C]);
      vec(`patch_embed${s}.norm`, C);
    }
    for (let j = 0; j < a.depths[s - 1]; j++) {
      const p = `block${s}.${j}.`;
      vec(`${p}norm1`, C);
      m.set(`${p}attn.q.weight`, [C, C]);
      m.set(`${p}attn.q.bias`, [C]);
      m.set(`${p}attn.proj.weight`, [C, C]);
      m.set(`${p}attn.proj.bias`, [C]);
      if (r > 1) {
        for (const [i, k] of [[1, r], [2, r / 2]] as const) {
          m.set(`${p}attn.sr${i}.weight`, [C, C, k, k]);
          m.set(`${p}attn.sr${i}.bias`, [C]);
          vec(`${p}attn.norm${i}`, C);
        }
        for (const i of [1, 2]) {
          m.set(`${p}attn.kv${i}.weight`, [C, C]);
          m.set(`${p}attn.kv${i}.bias`, [C]);
        }
        for (const i of [1, 2]) {
          m.set(`${p}attn.local_conv${i}.weight`, [C / 2, 1, 3, 3]);
          m.set(`${p}attn.local_conv${i}.bias`, [C / 2]);
        }
      } else {
        m.set(`${p}attn.kv.weight`, [2 * C, C]);
        m.set(`${p}attn.kv.bias`, [2 * C]);
        m.set(`${p}attn.local_conv.weight`, [C, 1, 3, 3]);
        m.set(`${p}attn.local_conv.bias`, [C]);
      }
      vec(`${p}norm2`, C);
      m.set(`${p}mlp.fc1.weight`, [F, C]);
      m.set(`${p}mlp.fc1.bias`, [F]);
      m.set(`${p}mlp.dwconv.dwconv.weight`, [F, 1, 3, 3]);
      m.set(`${p}mlp.dwconv.dwconv.bias`, [F]);
      m.set(`${p}mlp.fc2.weight`, [C, F]);
      m.set(`${p}mlp.fc2.bias`, [C]);
    }
    vec(`norm${s}`, C);
  }
  m.set('head.weight', [a.numClasses, a.embedDims[SHUNTED_STAGES - 1]]);
  m.set('head.bias', [a.numClasses]);
  return m;
}

/**
 * Infers a Shunted Transformer's architecture from its tensors and checks that
 * every tensor the forward pass reads is present with the right shape. Tensors
 * the model does not read (BatchNorm counters, extra keys) are ignored.
 *
 * Heads come from `opts.numHeads`, else from the named `opts.arch`, else from
 * the one released variant the tensors match.
 *
 * @throws WeightsError for a missing or misshapen tensor, a stem or stage
 *   layout SSA.py cannot build, an unsupported sr ratio, a negative BatchNorm
 *   variance, or a named arch the tensors contradict
 * @throws OptionsError for an unknown arch, a malformed numHeads, heads that do
 *   not divide a stage width or are odd where the heads split in two groups,
 *   or when the heads cannot be determined
 */
export function inferShuntedArchitecture(tensors: TensorMap, opts: ShuntedInferOptions = {}): ShuntedArchitecture {
  // Options first: they do not depend on the tensors.
  let named: Readonly<NamedShuntedArch> | undefined;
  if (opts.arch !== undefined) {
    named = namedShuntedArch(opts.arch);
    if (!named) throw new OptionsError(`unknown arch "${String(opts.arch)}"; known Shunted archs: ${ARCH_NAMES.join(', ')}`);
  }
  if (opts.numHeads !== undefined) {
    const h = opts.numHeads as unknown;
    if (!Array.isArray(h) || h.length !== SHUNTED_STAGES || !h.every((v) => Number.isSafeInteger(v) && v >= 1)) {
      throw new OptionsError(`numHeads must be ${SHUNTED_STAGES} positive integers, one per stage (e.g. 2,4,8,16), got ${Array.isArray(h) ? `[${h.join(',')}]` : String(h)}`);
    }
  }

  const shape = (name: string): number[] => {
    const t = tensors.get(name);
    if (!t) throw new WeightsError(`missing tensor ${name}`);
    return t.shape;
  };
  const expect4 = (name: string, pattern: string, ok: (s: number[]) => boolean): number[] => {
    const s = shape(name);
    if (s.length !== 4 || s.some((d) => !Number.isSafeInteger(d) || d < 1) || !ok(s)) {
      throw new WeightsError(`tensor ${name} has shape ${shapeStr(s)}, expected ${pattern}`);
    }
    return s;
  };

  // Stem: conv 0, BatchNorms at 1 + 3j, 3×3 convs at 3 + 3j, the 2×2 conv (with bias) last.
  const stem = expect4('patch_embed1.conv.0.weight', '[width,inChans,7,7]', (s) => s[2] === 7 && s[3] === 7);
  const stemWidth = stem[0]!;
  const inChans = stem[1]!;
  const stemIdx = new Set<number>();
  for (const name of tensors.keys()) {
    const m = /^patch_embed1\.conv\.(\d+)\./.exec(name);
    if (m) stemIdx.add(Number(m[1]));
  }
  const last = Math.max(...stemIdx);
  if (last < 3 || last % 3 !== 0) {
    throw new WeightsError(
      `the stem's last tensors are at patch_embed1.conv.${last}, but SSA.py's stem ends with its 2x2 conv at index ` +
        '3 + 3·num_conv (3, 6, 9, ...), after a conv, a BatchNorm and a ReLU for each of the 1 + num_conv layers before it',
    );
  }
  const numConv = (last - 3) / 3;
  const lastConv = expect4(`patch_embed1.conv.${last}.weight`, `[C1,${stemWidth},2,2]`, (s) => s[1] === stemWidth && s[2] === 2 && s[3] === 2);

  // Stages.
  const embedDims = [0, 0, 0, 0] as StageTuple;
  const depths = [0, 0, 0, 0] as StageTuple;
  const mlpHidden = [0, 0, 0, 0] as StageTuple;
  const srRatios = [0, 0, 0, 0] as StageTuple;
  const blockIds: Set<number>[] = [new Set(), new Set(), new Set(), new Set()];
  for (const name of tensors.keys()) {
    const m = /^block(\d+)\.(\d+)\./.exec(name);
    if (!m) continue;
    const s = Number(m[1]);
    if (s < 1 || s > SHUNTED_STAGES) throw new WeightsError(`unexpected tensor ${name}: a Shunted Transformer has stages block1..block${SHUNTED_STAGES}`);
    blockIds[s - 1]!.add(Number(m[2]));
  }
  for (let s = 1; s <= SHUNTED_STAGES; s++) {
    const ids = blockIds[s - 1]!;
    if (ids.size === 0) throw new WeightsError(`stage ${s} has no blocks (no tensors named block${s}.N.*)`);
    const depth = Math.max(...ids) + 1;
    for (let j = 0; j < depth; j++) {
      if (!ids.has(j)) throw new WeightsError(`missing block block${s}.${j}: stage ${s}'s blocks must be numbered 0..${depth - 1} without gaps`);
    }
    depths[s - 1] = depth;
    const norm = shape(`patch_embed${s}.norm.weight`);
    if (norm.length !== 1 || !Number.isSafeInteger(norm[0]) || norm[0]! < 1) {
      throw new WeightsError(`tensor patch_embed${s}.norm.weight has shape ${shapeStr(norm)}, expected [C${s}]`);
    }
    const C = norm[0]!;
    embedDims[s - 1] = C;

    // One sr ratio and one MLP width per stage, as SSA.py builds them.
    for (let j = 0; j < depth; j++) {
      const p = `block${s}.${j}.attn.`;
      const hasSr = tensors.has(`${p}sr1.weight`);
      const hasKv = tensors.has(`${p}kv.weight`);
      if (hasSr && hasKv) throw new WeightsError(`block ${s}.${j} has both ${p}sr1 (sr > 1) and ${p}kv (sr = 1)`);
      if (!hasSr && !hasKv) throw new WeightsError(`missing tensor ${p}sr1.weight or ${p}kv.weight: block ${s}.${j} has neither the sr > 1 nor the sr = 1 attention`);
      let r = 1;
      if (hasSr) {
        r = expect4(`${p}sr1.weight`, `[${C},${C},r,r] with r in ${SR_RATIOS.join(', ')}`, (t) => t[2] === t[3] && SR_RATIOS.includes(t[2]!))[2]!;
      }
      const fc1 = shape(`block${s}.${j}.mlp.fc1.weight`);
      if (fc1.length !== 2 || !Number.isSafeInteger(fc1[0]) || fc1[0]! < 1) {
        throw new WeightsError(`tensor block${s}.${j}.mlp.fc1.weight has shape ${shapeStr(fc1)}, expected [hidden,${C}]`);
      }
      if (j === 0) {
        srRatios[s - 1] = r;
        mlpHidden[s - 1] = fc1[0]!;
      } else if (r !== srRatios[s - 1]) {
        throw new WeightsError(`block ${s}.${j} has sr ratio ${r} but block ${s}.0 has ${srRatios[s - 1]}: SSA.py uses one sr ratio per stage`);
      } else if (fc1[0] !== mlpHidden[s - 1]) {
        throw new WeightsError(`block ${s}.${j} has MLP width ${fc1[0]} but block ${s}.0 has ${mlpHidden[s - 1]}: SSA.py uses one MLP ratio per stage`);
      }
    }
  }
  if (lastConv[0] !== embedDims[0]) {
    throw new WeightsError(`tensor patch_embed1.conv.${last}.weight has shape ${shapeStr(lastConv)}, expected [${embedDims[0]},${stemWidth},2,2]`);
  }
  const head = shape('head.weight');
  if (head.length !== 2 || !Number.isSafeInteger(head[0]) || head[0]! < 1) {
    throw new WeightsError(`tensor head.weight has shape ${shapeStr(head)}, expected [numClasses,${embedDims[3]}]`);
  }
  const numClasses = head[0]!;
  for (let s = 1; s <= SHUNTED_STAGES; s++) {
    if (srRatios[s - 1] > 1 && embedDims[s - 1] % 2 !== 0) {
      throw new WeightsError(`stage ${s} has width ${embedDims[s - 1]} and sr ratio ${srRatios[s - 1]}: the two head groups need an even width`);
    }
  }

  const dims: ShuntedDims = { embedDims, depths, mlpHidden, srRatios, numConv, stemWidth, inChans, numClasses };
  const required = requiredShuntedTensors(dims);
  // A stem parameter the forward pass would not read (a conv bias, a BatchNorm at a ReLU's index) means another model.
  for (const name of tensors.keys()) {
    if (name.startsWith('patch_embed1.conv.') && !required.has(name) && !name.endsWith('.num_batches_tracked')) {
      throw new WeightsError(`unexpected tensor ${name}: SSA.py's stem with num_conv ${numConv} has no such parameter`);
    }
  }
  for (const [name, expected] of required) {
    const t = tensors.get(name);
    if (!t) throw new WeightsError(`missing tensor ${name}`);
    if (!sameShape(t.shape, expected)) {
      throw new WeightsError(`tensor ${name} has shape ${shapeStr(t.shape)}, expected ${shapeStr(expected)}`);
    }
    const numel = expected.reduce((a, b) => a * b, 1);
    if (t.data.length !== numel) {
      throw new WeightsError(`tensor ${name} has ${t.data.length} values, shape ${shapeStr(expected)} needs ${numel}`);
    }
  }
  // A negative running variance would turn BatchNorm folding into NaNs.
  for (let j = 0; j <= numConv; j++) {
    const name = `patch_embed1.conv.${1 + 3 * j}.running_var`;
    const v = tensors.get(name)!.data;
    for (let c = 0; c < v.length; c++) {
      if (!(v[c]! >= 0)) throw new WeightsError(`tensor ${name} has ${v[c]} at channel ${c}: a BatchNorm variance must be a number >= 0`);
    }
  }

  // Heads.
  const matches = (a: Readonly<NamedShuntedArch>): boolean =>
    a.numConv === numConv && stemWidth === 64 && inChans === 3 &&
    a.embedDims.every((c, i) => c === embedDims[i]) && a.depths.every((d, i) => d === depths[i]) &&
    a.srRatios.every((r, i) => r === srRatios[i]) && a.mlpRatios.every((m, i) => Math.trunc(a.embedDims[i]! * m) === mlpHidden[i]);
  if (named && !matches(named)) {
    const diffs: string[] = [];
    const cmp = (what: string, got: readonly number[], want: readonly number[]): void => {
      if (!sameShape(got, want)) diffs.push(`${what} ${listStr(got)} (expected ${listStr(want)})`);
    };
    cmp('embed dims', embedDims, named.embedDims);
    cmp('depths', depths, named.depths);
    cmp('sr ratios', srRatios, named.srRatios);
    cmp('MLP widths', mlpHidden, named.mlpRatios.map((m, i) => Math.trunc(named!.embedDims[i]! * m)));
    if (numConv !== named.numConv) diffs.push(`num_conv ${numConv} (expected ${named.numConv})`);
    if (stemWidth !== 64 || inChans !== 3) diffs.push(`stem ${inChans} -> ${stemWidth} channels (expected 3 -> 64)`);
    throw new WeightsError(`checkpoint does not match arch ${opts.arch}: ${diffs.join(', ')}`);
  }
  let numHeads: StageTuple;
  let arch: ShuntedArchName | null;
  if (opts.numHeads !== undefined) {
    numHeads = [...opts.numHeads] as StageTuple;
    if (named && !sameShape(numHeads, named.numHeads)) {
      throw new OptionsError(`numHeads ${listStr(numHeads)} contradicts arch ${opts.arch}, which has ${listStr(named.numHeads)} heads`);
    }
    arch = (opts.arch as ShuntedArchName | undefined) ??
      ARCH_NAMES.find((k) => matches(SHUNTED_ARCHS[k]) && sameShape(SHUNTED_ARCHS[k].numHeads, numHeads)) ?? null;
  } else if (named) {
    numHeads = [...named.numHeads] as StageTuple;
    arch = opts.arch as ShuntedArchName;
  } else {
    const found = ARCH_NAMES.filter((k) => matches(SHUNTED_ARCHS[k]));
    if (found.length !== 1) {
      throw new OptionsError(
        `cannot infer the attention heads of a Shunted Transformer with embed dims ${listStr(embedDims)}, depths ${listStr(depths)}, ` +
          `num_conv ${numConv}: pass \`arch\` (one of ${ARCH_NAMES.join(', ')}) or \`numHeads\` (one count per stage, e.g. 2,4,8,16)`,
      );
    }
    arch = found[0]!;
    numHeads = [...SHUNTED_ARCHS[arch].numHeads] as StageTuple;
  }
  for (let s = 0; s < SHUNTED_STAGES; s++) {
    const C = embedDims[s]!;
    const h = numHeads[s]!;
    if (C % h !== 0) throw new OptionsError(`numHeads ${h} for stage ${s + 1} does not divide its embed dim ${C}`);
    if (srRatios[s]! > 1 && h % 2 !== 0) {
      throw new OptionsError(`numHeads ${h} for stage ${s + 1} is odd, but its sr ratio ${srRatios[s]} splits the heads into two equal groups`);
    }
  }
  const headDims = embedDims.map((c, i) => c / numHeads[i]!) as StageTuple;
  const mlpRatios = mlpHidden.map((f, i) => f / embedDims[i]!) as StageTuple;
  return { family: 'shunted', embedDims, depths, numHeads, headDims, mlpHidden, mlpRatios, srRatios, numConv, stemWidth, inChans, numClasses, arch };
}

/** Token grid [rows, cols] of each stage for an input of the given size (any size; may contain zeros). */
export function shuntedStageGrids(imgSize: number | readonly [number, number]): [number, number][] {
  const [h0, w0] = typeof imgSize === 'number' ? [imgSize, imgSize] : imgSize;
  // 7×7 stride-2 conv (padding 3), then 2×2 stride 2; later stages 3×3 stride 2 (padding 1).
  const first = (n: number): number => Math.floor((Math.floor((n - 1) / 2) + 1) / 2);
  const next = (n: number): number => (n < 1 ? 0 : Math.floor((n - 1) / 2) + 1);
  const grids: [number, number][] = [[first(h0), first(w0)]];
  for (let s = 1; s < SHUNTED_STAGES; s++) {
    const [h, w] = grids[s - 1]!;
    grids.push([next(h), next(w)]);
  }
  return grids;
}

/** Whether an input size suits a Shunted model, with the stage grids, and why not when it does not. */
export type ShuntedSizeCheck =
  | { ok: true; grids: [number, number][] }
  | { ok: false; grids: [number, number][]; reason: string };

/**
 * Checks that every stage's token grid is divisible by its sr ratio in both
 * dimensions (the authors' code would otherwise silently drop the last rows
 * and columns from the aggregated keys). `imgSize` is a side or [height, width].
 */
export function validShuntedInputSize(
  arch: Pick<ShuntedArchitecture, 'srRatios'>,
  imgSize: number | readonly [number, number],
): ShuntedSizeCheck {
  const sizes: unknown[] = typeof imgSize === 'number' ? [imgSize, imgSize] : Array.isArray(imgSize) ? [...imgSize] : [];
  const label = typeof imgSize === 'number' ? `${imgSize} px` : `${sizes.join('x')} px`;
  if (sizes.length !== 2 || !sizes.every((v) => Number.isSafeInteger(v) && (v as number) >= 1)) {
    return { ok: false, grids: [], reason: `image size must be a positive integer or [height, width] of positive integers, got ${String(imgSize)}` };
  }
  const grids = shuntedStageGrids(sizes as [number, number]);
  for (let s = 0; s < SHUNTED_STAGES; s++) {
    const r = arch.srRatios[s]!;
    const [h, w] = grids[s]!;
    if (h < 1 || w < 1 || h % r !== 0 || w % r !== 0) {
      const dims = ['height', 'width'].filter((_, i) => { const g = grids[s]![i]!; return g < 1 || g % r !== 0; });
      const near = dims.map((d) => {
        const side = sizes[d === 'height' ? 0 : 1] as number;
        return `${d}: ${nearestValid(arch.srRatios, side).join(' or ')}`;
      });
      return {
        ok: false,
        grids,
        reason: `input ${label} gives stage ${s + 1} a ${h}x${w} token grid, which its sr ratio ${r} does not divide ` +
          `(every stage's grid must be a multiple of its sr ratio, ${listStr(arch.srRatios)}); nearest sizes that work, ${near.join('; ')}`,
      };
    }
  }
  return { ok: true, grids };
}

/** The closest valid sides below and above `side` (one dimension). */
function nearestValid(srRatios: readonly number[], side: number): number[] {
  const fits = (n: number): boolean => shuntedStageGrids(n).every(([g], s) => g >= 1 && g % srRatios[s]! === 0);
  const out: number[] = [];
  for (let n = side - 1; n >= 1; n--) if (fits(n)) { out.push(n); break; }
  for (let n = side + 1; n <= side + 4096; n++) if (fits(n)) { out.push(n); break; }
  return out;
}

/** The stem's convolutions that a BatchNorm follows: index 0 and 3 + 3j, j < num_conv. */
function stemBatchNormConvs(numConv: number): number[] {
  return Array.from({ length: numConv + 1 }, (_, j) => (j === 0 ? 0 : 3 * j));
}

/**
 * The tensors the native backend reads, by the authors' names, except that every stem BatchNorm
 * is folded into the convolution before it (float64, rounded once): `patch_embed1.conv.{0,3,..}`
 * arrive with a `.bias` and the BatchNorms are gone. `tensors` has passed inferShuntedArchitecture.
 */
export function shuntedNativeTensors(tensors: TensorMap, arch: ShuntedDims): Record<string, Float32Array> {
  const out: Record<string, Float32Array> = {};
  const stem = /^patch_embed1\.conv\.(\d+)\./;
  const lastConv = 3 + 3 * arch.numConv; // the 2×2 conv, the one stem conv without a BatchNorm
  for (const name of requiredShuntedTensors(arch).keys()) {
    const m = stem.exec(name);
    if (m && Number(m[1]) !== lastConv) continue; // a BatchNorm, or the conv it is folded into below
    out[name] = tensors.get(name)!.data;
  }
  for (const i of stemBatchNormConvs(arch.numConv)) {
    const bn = (k: string): Float32Array => tensors.get(`patch_embed1.conv.${i + 1}.${k}`)!.data;
    const folded = foldBatchNorm(tensors.get(`patch_embed1.conv.${i}.weight`)!, null, {
      weight: bn('weight'), bias: bn('bias'), runningMean: bn('running_mean'), runningVar: bn('running_var'),
    });
    out[`patch_embed1.conv.${i}.weight`] = folded.weight.data;
    out[`patch_embed1.conv.${i}.bias`] = folded.bias;
  }
  return out;
}

/** The binding's config of a Shunted model for inputs of imgSize × imgSize. */
export function shuntedNativeConfig(a: ShuntedArchitecture, imgSize: number): {
  family: 'shunted';
  stages: Array<{ dim: number; depth: number; heads: number; srRatio: number; mlpHidden: number }>;
  numConv: number;
  inChans: number;
  stemWidth: number;
  imgH: number;
  imgW: number;
  numClasses: number;
} {
  return {
    family: 'shunted',
    stages: a.embedDims.map((dim, s) => ({ dim, depth: a.depths[s]!, heads: a.numHeads[s]!, srRatio: a.srRatios[s]!, mlpHidden: a.mlpHidden[s]! })),
    numConv: a.numConv,
    inChans: a.inChans,
    stemWidth: a.stemWidth,
    imgH: imgSize,
    imgW: imgSize,
    numClasses: a.numClasses,
  };
}
