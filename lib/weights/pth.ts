/**
 * PyTorch `.pth` checkpoints (the zip files torch.save writes, as the DeiT,
 * DeiT III and EViT authors release them), read without Python.
 *
 * The pickle is interpreted by the restricted unpickler in pickle.ts, which
 * builds tensor references; only the tensors of the chosen state dict are
 * then read from their storages (CRC-checked, range-checked, strided views
 * materialised), and each only when its `data` is first read: shapes cost
 * nothing, and storages the model never reads are never inflated. Float
 * tensors are decoded to float32; others are listed as skipped.
 */
import { OptionsError, WeightsError } from '../errors';
import {
  PickleDict, PickleNamespace, PickleTuple, StorageType, TensorRef, STORAGE_ITEM_SIZE, unpickle,
  type StorageDType,
} from './pickle';
import { TorchZip } from './pthZip';
import { decode, type TensorF32, type TensorMap } from './safetensors';

/** Where the state dict is looked for, in order, when no key is given. */
export const STATE_DICT_KEYS = ['model', 'state_dict', 'model_ema'] as const;

export interface PthOptions {
  /** Top-level key holding the state dict. Default: the first of STATE_DICT_KEYS present, else the top level. */
  key?: string;
}

/** A tensor that is not floating point: listed, not decoded. */
export interface SkippedTensor {
  dtype: StorageDType;
  shape: number[];
}

export interface ParsedPth {
  /** Float tensors decoded to float32, with any `module.` prefix removed, in pickle order. */
  tensors: TensorMap;
  /** The stored dtype of each tensor in `tensors`. */
  dtypes: Map<string, StorageDType>;
  /** Integer and boolean tensors of the state dict, which the model never reads. */
  skipped: Map<string, SkippedTensor>;
  /**
   * Defaults in the safetensors `__metadata__` vocabulary, taken from the training
   * options an EViT checkpoint carries (`args.base_keep_rate`, `args.drop_loc`, `args.fuse_token`).
   */
  metadata: Record<string, string>;
  /** The top-level key the state dict came from, or null when it is the top level. */
  stateDictKey: string | null;
}

/** A storage named by a persistent id, not yet read. */
class StorageRef {
  constructor(readonly key: string, readonly dtype: StorageDType, readonly numel: number) {}
}

/** Largest view with more elements than its storage (stride 0) that is materialised: 64 MiB of F32. */
const MAX_EXPANDED_ELEMENTS = 1 << 24;
const FLOAT_DTYPES = new Set<StorageDType>(['F32', 'F16', 'BF16', 'F64']);
const LITTLE_ENDIAN_HOST = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/**
 * Reads a torch.save zip checkpoint from memory.
 * @throws WeightsError for a damaged archive, a refused pickle, a missing or out-of-range storage
 * @throws OptionsError when `key` names no state dict in the file
 */
export async function parsePth(buf: Buffer, source = '<buffer>', options: PthOptions = {}): Promise<ParsedPth> {
  const fail = (msg: string): never => {
    throw new WeightsError(`${source}: ${msg}`);
  };
  const zip = await TorchZip.open(buf, source);
  if (zip.has('byteorder')) {
    const order = zip.read('byteorder').toString('latin1').trim();
    if (order !== 'little') fail(`storages are ${order}-endian; only little-endian checkpoints are read`);
  }

  const storages = new Map<string, StorageRef>();
  const top = unpickle(zip.read('data.pkl'), {
    source: `${source}: data.pkl`,
    persistentLoad(pid) {
      // torch.save: ('storage', <torch.XStorage>, key, location, numel)
      const t = pid instanceof PickleTuple ? pid.items : null;
      if (!t || t.length !== 5 || t[0] !== 'storage')
        return fail(`data.pkl: persistent id is not a storage reference ('storage', type, key, location, numel)`);
      const [, type, key, , numel] = t;
      if (!(type instanceof StorageType)) return fail(`data.pkl: storage type is not a torch storage class`);
      if (typeof key !== 'string' || !/^[A-Za-z0-9_.-]+$/.test(key)) return fail(`data.pkl: storage key ${JSON.stringify(key)} is not a plain name`);
      if (typeof numel !== 'number' || !Number.isSafeInteger(numel) || numel < 0) return fail(`data.pkl: storage ${key} has an invalid size`);
      const seen = storages.get(key);
      if (seen && (seen.dtype !== type.dtype || seen.numel !== numel))
        return fail(`data.pkl: storage ${key} is referenced as both ${seen.dtype}[${seen.numel}] and ${type.dtype}[${numel}]`);
      const ref = seen ?? new StorageRef(key, type.dtype, numel);
      storages.set(key, ref);
      return ref;
    },
  });

  const { dict, key } = findStateDict(top, options.key, source);
  const entries = [...dict.entries];
  const names = entries.map(([k]) => k);
  if (!names.every((k): k is string => typeof k === 'string')) fail(`state dict${where(key)} has keys that are not strings`);
  const strip = names.length > 0 && (names as string[]).every((k) => k.startsWith('module.'));

  // Storages are checked when the state dict is read (present, of the right size; stored ones
  // CRC-checked, which costs no copy), and decoded, deflated ones inflated, when first read.
  const checked = new Set<string>();
  const checkStorage = (s: StorageRef): void => {
    if (checked.has(s.key)) return;
    const entry = `data/${s.key}`;
    const size = zip.size(entry);
    if (size === undefined) fail(`storage ${s.key} is missing from the archive (no ${zip.root}/${entry})`);
    const bytes = s.numel * STORAGE_ITEM_SIZE[s.dtype];
    if (size !== bytes) fail(`storage ${s.key} holds ${size} bytes but ${s.dtype}[${s.numel}] needs ${bytes}`);
    if (!zip.deflated(entry)) zip.read(entry);
    checked.add(s.key);
  };
  const decoded = new Map<string, Float32Array>();
  const storageData = (s: StorageRef): Float32Array => {
    let data = decoded.get(s.key);
    if (!data) decoded.set(s.key, (data = decodeStorage(zip.read(`data/${s.key}`), s.dtype)));
    return data;
  };

  const tensors: TensorMap = new Map();
  const dtypes = new Map<string, StorageDType>();
  const skipped = new Map<string, SkippedTensor>();
  for (const [rawName, value] of entries) {
    const name = strip ? (rawName as string).slice('module.'.length) : (rawName as string);
    if (tensors.has(name) || skipped.has(name)) fail(`tensor ${name} appears twice`);
    if (!(value instanceof TensorRef)) continue;
    const s = value.storage;
    if (!(s instanceof StorageRef)) return fail(`tensor ${name} is not backed by a storage of the archive`);
    checkRange(name, value, s, source);
    if (!FLOAT_DTYPES.has(s.dtype)) {
      skipped.set(name, { dtype: s.dtype, shape: value.shape.slice() });
      continue;
    }
    checkStorage(s);
    tensors.set(name, lazyTensor(value.shape.slice(), () => view(storageData(s), value)));
    dtypes.set(name, s.dtype);
  }
  if (tensors.size === 0 && skipped.size === 0) fail(`state dict${where(key)} holds no tensors`);
  return { tensors, dtypes, skipped, metadata: trainingDefaults(top), stateDictKey: key };
}

/** A tensor whose data is decoded the first time it is read (a WeightsError then, if the storage is bad). */
function lazyTensor(shape: number[], decodeData: () => Float32Array): TensorF32 {
  let data: Float32Array | undefined;
  return {
    shape,
    get data() {
      return (data ??= decodeData());
    },
    set data(v: Float32Array) {
      data = v;
    },
  };
}

function where(key: string | null): string {
  return key === null ? '' : ` under "${key}"`;
}

function isStateDict(v: unknown): boolean {
  if (!(v instanceof PickleDict)) return false;
  for (const x of v.entries.values()) if (x instanceof TensorRef) return true;
  return false;
}

function findStateDict(top: unknown, key: string | undefined, source: string): { dict: PickleDict; key: string | null } {
  if (!(top instanceof PickleDict)) throw new WeightsError(`${source}: the checkpoint holds ${top === null ? 'None' : 'a value'} that is not a dict`);
  if (key !== undefined) {
    const v = top.entries.get(key);
    if (v === undefined) {
      const keys = [...top.entries.keys()].filter((k) => typeof k === 'string').join(', ');
      throw new OptionsError(`${source}: no key "${key}" in the checkpoint (keys: ${keys || 'none'})`);
    }
    if (!isStateDict(v)) throw new WeightsError(`${source}: "${key}" is not a state dict of tensors`);
    return { dict: v as PickleDict, key };
  }
  for (const k of STATE_DICT_KEYS) {
    const v = top.entries.get(k);
    if (isStateDict(v)) return { dict: v as PickleDict, key: k };
  }
  if (isStateDict(top)) return { dict: top, key: null };
  const keys = [...top.entries.keys()].filter((k) => typeof k === 'string').slice(0, 10).join(', ');
  throw new WeightsError(
    `${source}: no state dict found: neither ${STATE_DICT_KEYS.map((k) => `"${k}"`).join(', ')} nor the top level holds tensors (keys: ${keys || 'none'})`,
  );
}

/** Checks that every element a tensor view addresses lies inside its storage. */
function checkRange(name: string, t: TensorRef, s: StorageRef, source: string): void {
  let numel = 1;
  let last = t.offset;
  t.shape.forEach((d, i) => {
    numel *= d;
    last += (d - 1) * t.stride[i]!;
  });
  if (!Number.isSafeInteger(numel)) throw new WeightsError(`${source}: tensor ${name} has too many elements`);
  // Overlapping strides (an expanded view) could otherwise ask for far more memory than the file holds.
  if (numel > s.numel && numel > MAX_EXPANDED_ELEMENTS)
    throw new WeightsError(
      `${source}: tensor ${name} [${t.shape.join(', ')}] expands storage ${s.key} of ${s.numel} elements to ${numel}; ` +
        `views larger than their storage are read up to ${MAX_EXPANDED_ELEMENTS} elements`,
    );
  const end = numel === 0 ? t.offset : last + 1;
  if (end > s.numel || !Number.isSafeInteger(end))
    throw new WeightsError(
      `${source}: tensor ${name} [${t.shape.join(', ')}] at offset ${t.offset} with strides [${t.stride.join(', ')}] ` +
        `reaches element ${end - 1} of storage ${s.key}, which has ${s.numel} elements`,
    );
}

/** The float32 values of a whole storage: a view of the file for aligned F32, a decoded copy otherwise. */
function decodeStorage(bytes: Buffer, dtype: StorageDType): Float32Array {
  if (dtype === 'F32' || dtype === 'F16' || dtype === 'BF16') return decode(bytes, dtype);
  // F64: round to float32, the precision the model computes in.
  const n = bytes.length / 8;
  const out = new Float32Array(n);
  if (LITTLE_ENDIAN_HOST && (bytes.byteOffset & 7) === 0) out.set(new Float64Array(bytes.buffer, bytes.byteOffset, n));
  else for (let i = 0; i < n; i++) out[i] = bytes.readDoubleLE(8 * i);
  return out;
}

/** The tensor's elements in row-major order: a subarray when contiguous, a strided copy otherwise. */
function view(storage: Float32Array, t: TensorRef): Float32Array {
  const { shape, stride, offset } = t;
  const numel = shape.reduce((a, b) => a * b, 1);
  let expect = 1;
  let contiguous = true;
  for (let i = shape.length - 1; i >= 0; i--) {
    if (shape[i]! !== 1 && stride[i]! !== expect) contiguous = false;
    expect *= shape[i]!;
  }
  if (contiguous || numel === 0) return storage.subarray(offset, offset + numel);
  const out = new Float32Array(numel);
  const rank = shape.length;
  const idx = new Array<number>(rank).fill(0);
  let src = offset;
  for (let i = 0; i < numel; i++) {
    out[i] = storage[src]!;
    for (let d = rank - 1; d >= 0; d--) {
      if (++idx[d]! < shape[d]!) {
        src += stride[d]!;
        break;
      }
      src -= (shape[d]! - 1) * stride[d]!;
      idx[d] = 0;
    }
  }
  return out;
}

/**
 * The EViT schedule a training script recorded in `args` (an argparse.Namespace),
 * in the safetensors `__metadata__` vocabulary. Values of the wrong type are ignored.
 */
function trainingDefaults(top: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (!(top instanceof PickleDict)) return out;
  const args = top.entries.get('args');
  let fields: Map<unknown, unknown>;
  if (args instanceof PickleNamespace) fields = args.fields;
  else if (args instanceof PickleDict) fields = args.entries;
  else return out;
  const rate = fields.get('base_keep_rate');
  if (typeof rate === 'number' && Number.isFinite(rate)) out['evit.keep_rate'] = String(rate);
  const loc = fields.get('drop_loc');
  // The EViT script takes --drop_loc as a Python tuple literal, e.g. "(3, 6, 9)".
  let blocks: string[] | null = null;
  if (typeof loc === 'string' && /^\s*[([]?\s*(\d+\s*(,\s*\d+\s*)*,?)?\s*[)\]]?\s*$/.test(loc)) blocks = loc.match(/\d+/g);
  const items = Array.isArray(loc) ? loc : loc instanceof PickleTuple ? loc.items : null;
  if (items && items.every((v) => Number.isSafeInteger(v))) blocks = items.map(String);
  if (blocks && blocks.length) out['evit.drop_loc'] = blocks.join(',');
  const fuse = fields.get('fuse_token');
  if (typeof fuse === 'boolean' && out['evit.keep_rate'] !== undefined) out['evit.fuse'] = String(fuse);
  return out;
}
