/**
 * Reader and writer for the safetensors format
 * (https://github.com/huggingface/safetensors):
 *
 *   [u64 LE header length n][n bytes UTF-8 JSON header][data section]
 *
 * The header maps tensor names to `{ dtype, shape, data_offsets: [begin, end] }`
 * (offsets relative to the start of the data section) plus an optional
 * `__metadata__` string map. Everything is validated before any tensor data
 * is read; every failure is a WeightsError that names the file, the tensor and
 * what was expected.
 */
import { promises as fsp } from 'node:fs';
import { OptionsError, WeightsError } from '../errors';
import { jsonNestingDepth } from '../jsonDepth';

const HEADER_MAX_DEPTH = 4;

/** Stored element types that evit reads. All are decoded to float32. */
export type DType = 'F32' | 'F16' | 'BF16';

/** A dense row-major float32 tensor. */
export interface TensorF32 {
  shape: number[];
  data: Float32Array;
}

/** Tensors by name, in header order. */
export type TensorMap = Map<string, TensorF32>;

/** A tensor to write with serializeSafetensors. */
export interface TensorToWrite {
  dtype: DType;
  shape: number[];
  data: Float32Array;
}

/** An integer tensor present in a file but not decoded (see COUNTER_ITEM_SIZE). */
export interface SkippedSafetensor {
  dtype: CounterDType;
  shape: number[];
}

/** Result of parsing a safetensors file. */
export interface ParsedSafetensors {
  /** Tensors decoded to float32, in header order. */
  tensors: TensorMap;
  /** The dtype each tensor was stored in. */
  dtypes: Map<string, DType>;
  /** BatchNorm counters (`*.num_batches_tracked`), checked but not decoded: nothing reads them. */
  skipped: Map<string, SkippedSafetensor>;
  /** The `__metadata__` string map ({} when absent). */
  metadata: Record<string, string>;
}

const ITEM_SIZE: Record<DType, number> = { F32: 4, F16: 2, BF16: 2 };
const SUPPORTED = 'F32, F16, BF16';
/** dtypes the format defines; used only to word the error for a valid-but-unsupported one. */
const KNOWN_OTHER_DTYPES = new Set([
  'BOOL', 'U8', 'I8', 'U16', 'I16', 'U32', 'I32', 'U64', 'I64', 'F64',
  'F8_E5M2', 'F8_E4M3', 'F8_E4M3FN', 'F8_E5M2FNUZ', 'F8_E4M3FNUZ', 'F8_E8M0', 'F4', 'F6_E2M3', 'F6_E3M2',
]);

/**
 * BatchNorm's `num_batches_tracked`, an integer scalar that checkpoints of models with BatchNorm
 * (a Shunted Transformer's stem) carry after each BatchNorm, HF/timm conversions included.
 * These, and only these, integer tensors are accepted; any other integer tensor is still an
 * error, as a model would read it.
 */
type CounterDType = 'I64' | 'I32';
const COUNTER_ITEM_SIZE: Record<CounterDType, number> = { I64: 8, I32: 4 };
const COUNTER_NAME = /(?:^|\.)num_batches_tracked$/;

const LITTLE_ENDIAN_HOST = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

interface Entry {
  name: string;
  dtype: DType | CounterDType;
  shape: number[];
  begin: number;
  end: number;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function fmt(v: unknown): string {
  try {
    const s = JSON.stringify(v);
    return s === undefined ? String(v) : s;
  } catch {
    return String(v);
  }
}

/**
 * Parses a safetensors file held in memory. F32 tensors whose bytes are
 * 4-byte aligned in `buf` are returned as views into `buf` (no copy) on
 * little-endian hosts; everything else is copied and decoded.
 *
 * @param buf the whole file
 * @param source a name for error messages (usually the file path)
 * @throws WeightsError if the file is malformed in any way
 */
export function parseSafetensors(buf: Buffer | Uint8Array, source = '<buffer>'): ParsedSafetensors {
  const fail = (msg: string): never => {
    throw new WeightsError(`${source}: ${msg}`);
  };
  if (!(buf instanceof Uint8Array)) {
    throw new OptionsError(`parseSafetensors expects a Buffer or Uint8Array, got ${typeof buf}`);
  }
  const fileLen = buf.byteLength;
  if (fileLen < 8) {
    fail(`file is ${fileLen} bytes, too short for the 8-byte safetensors header length`);
  }
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const headerLenBig = view.getBigUint64(0, true);
  if (headerLenBig > BigInt(Number.MAX_SAFE_INTEGER)) {
    fail(`header length ${headerLenBig} (bytes 0-7) is not a plausible size`);
  }
  const headerLen = Number(headerLenBig);
  if (8 + headerLen > fileLen) {
    fail(`header length ${headerLen} (bytes 0-7) runs past the end of the file: header would end at byte ${8 + headerLen}, file is ${fileLen} bytes`);
  }
  const dataStart = 8 + headerLen;
  const dataLen = fileLen - dataStart;

  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(buf.subarray(8, dataStart));
  } catch {
    return fail(`header (bytes 8-${dataStart}) is not valid UTF-8`);
  }
  // {name: {dtype, shape: [...], data_offsets: [...]}, __metadata__: {...}} is three levels deep.
  if (jsonNestingDepth(text, HEADER_MAX_DEPTH) > HEADER_MAX_DEPTH)
    fail(`header (bytes 8-${dataStart}) nests JSON deeper than a safetensors header (${HEADER_MAX_DEPTH} levels)`);
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch (e) {
    return fail(`header (bytes 8-${dataStart}) is not valid JSON: ${(e as Error).message}`);
  }
  if (!isPlainObject(header)) {
    fail(`header (bytes 8-${dataStart}) must be a JSON object, got ${Array.isArray(header) ? 'an array' : fmt(header)}`);
  }
  const hdr = header as Record<string, unknown>;

  const metadata: Record<string, string> = {};
  if ('__metadata__' in hdr) {
    const m = hdr.__metadata__;
    if (!isPlainObject(m)) fail(`__metadata__ must be an object of strings, got ${fmt(m)}`);
    for (const [k, v] of Object.entries(m as Record<string, unknown>)) {
      if (typeof v !== 'string') fail(`__metadata__ entry "${k}" must be a string, got ${fmt(v)}`);
      metadata[k] = v as string;
    }
  }

  const entries: Entry[] = [];
  for (const [name, raw] of Object.entries(hdr)) {
    if (name === '__metadata__') continue;
    const t = `tensor "${name}"`;
    if (!isPlainObject(raw)) fail(`${t}: header entry must be an object, got ${fmt(raw)}`);
    const e = raw as Record<string, unknown>;
    for (const field of ['dtype', 'shape', 'data_offsets']) {
      if (!(field in e)) fail(`${t}: header entry is missing "${field}"`);
    }
    const dtype = e.dtype;
    if (typeof dtype !== 'string') fail(`${t}: dtype must be a string, got ${fmt(dtype)}`);
    const counter = COUNTER_NAME.test(name) && Object.prototype.hasOwnProperty.call(COUNTER_ITEM_SIZE, dtype as string);
    if (!(dtype === 'F32' || dtype === 'F16' || dtype === 'BF16') && !counter) {
      const what = KNOWN_OTHER_DTYPES.has(dtype as string) ? 'unsupported dtype' : 'unknown dtype';
      fail(`${t} has ${what} ${dtype}; supported dtypes are ${SUPPORTED}`);
    }
    const shape = e.shape;
    if (!Array.isArray(shape)) fail(`${t}: shape must be an array, got ${fmt(shape)}`);
    let numel = 1;
    (shape as unknown[]).forEach((d, i) => {
      if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0) {
        fail(`${t}: shape ${fmt(shape)} has invalid dimension ${fmt(d)} at index ${i} (must be a non-negative integer)`);
      }
      numel *= d as number;
    });
    if (!Number.isSafeInteger(numel)) fail(`${t}: shape ${fmt(shape)} has too many elements`);
    const offs = e.data_offsets;
    if (
      !Array.isArray(offs) || offs.length !== 2 ||
      !offs.every((o) => typeof o === 'number' && Number.isSafeInteger(o) && o >= 0)
    ) {
      fail(`${t}: data_offsets must be [begin, end] with non-negative integers, got ${fmt(offs)}`);
    }
    const [begin, end] = offs as [number, number];
    if (begin > end) fail(`${t}: data_offsets [${begin}, ${end}] has begin > end`);
    if (end > dataLen) {
      fail(`${t}: data_offsets [${begin}, ${end}] run past the end of the data section (${dataLen} bytes, file bytes ${dataStart}-${fileLen}); the file may be truncated`);
    }
    const itemSize = counter ? COUNTER_ITEM_SIZE[dtype as CounterDType] : ITEM_SIZE[dtype as DType];
    const expectedBytes = numel * itemSize;
    if (end - begin !== expectedBytes) {
      fail(`${t}: data_offsets [${begin}, ${end}] span ${end - begin} bytes, but shape ${fmt(shape)} of ${dtype} needs ${numel} x ${itemSize} = ${expectedBytes} bytes`);
    }
    entries.push({ name, dtype: dtype as DType | CounterDType, shape: (shape as number[]).slice(), begin, end });
  }

  // No two tensors may share a byte.
  const byOffset = entries.filter((e) => e.end > e.begin).sort((a, b) => a.begin - b.begin || a.end - b.end);
  for (let i = 1; i < byOffset.length; i++) {
    const prev = byOffset[i - 1]!;
    const cur = byOffset[i]!;
    if (cur.begin < prev.end) {
      fail(`tensor "${cur.name}" data_offsets [${cur.begin}, ${cur.end}] overlap tensor "${prev.name}" data_offsets [${prev.begin}, ${prev.end}]`);
    }
  }

  const tensors: TensorMap = new Map();
  const dtypes = new Map<string, DType>();
  const skipped = new Map<string, SkippedSafetensor>();
  for (const e of entries) {
    if (e.dtype === 'I64' || e.dtype === 'I32') {
      skipped.set(e.name, { dtype: e.dtype, shape: e.shape });
      continue;
    }
    const abs = dataStart + e.begin;
    const bytes = buf.subarray(abs, dataStart + e.end);
    tensors.set(e.name, { shape: e.shape, data: decode(bytes, e.dtype) });
    dtypes.set(e.name, e.dtype);
  }
  return { tensors, dtypes, skipped, metadata };
}

/** Decodes little-endian stored elements to float32. */
export function decode(bytes: Uint8Array, dtype: DType): Float32Array {
  if (dtype === 'F32') {
    const n = bytes.byteLength / 4;
    if (LITTLE_ENDIAN_HOST) {
      if ((bytes.byteOffset & 3) === 0) return new Float32Array(bytes.buffer, bytes.byteOffset, n);
      const copy = new Uint8Array(bytes.byteLength);
      copy.set(bytes);
      return new Float32Array(copy.buffer, 0, n);
    }
    const out = new Float32Array(n);
    const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    for (let i = 0; i < n; i++) out[i] = dv.getFloat32(4 * i, true);
    return out;
  }
  const n = bytes.byteLength / 2;
  const out = new Float32Array(n);
  if (dtype === 'BF16') {
    const u32 = new Uint32Array(out.buffer);
    for (let i = 0; i < n; i++) u32[i] = ((bytes[2 * i]! | (bytes[2 * i + 1]! << 8)) << 16) >>> 0;
    return out;
  }
  const table = halfTable();
  for (let i = 0; i < n; i++) out[i] = table[bytes[2 * i]! | (bytes[2 * i + 1]! << 8)]!;
  return out;
}

let HALF_TABLE: Float32Array | null = null;

/** float32 value of every half-precision bit pattern (built once, 256 KiB). */
function halfTable(): Float32Array {
  if (HALF_TABLE) return HALF_TABLE;
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) t[h] = halfToFloat(h);
  HALF_TABLE = t;
  return t;
}

/** Decodes one IEEE 754 binary16 bit pattern (subnormals, ±0, ±inf, NaN). */
export function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 31) return mant === 0 ? sign * Infinity : NaN;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

const F32_SCRATCH = new Float32Array(1);
const U32_SCRATCH = new Uint32Array(F32_SCRATCH.buffer);

/** float32 bit pattern of `x` (rounded to float32 first). */
function f32Bits(x: number): number {
  F32_SCRATCH[0] = x;
  return U32_SCRATCH[0]!;
}

/** Encodes a float32 value as binary16, rounding to nearest even; overflow gives ±inf. */
export function floatToHalf(x: number): number {
  const f = f32Bits(x);
  const sign = (f >>> 16) & 0x8000;
  const fExp = f & 0x7f800000;
  if (fExp >= 0x47800000) {
    // |x| >= 65536, inf or NaN.
    if (fExp === 0x7f800000 && (f & 0x007fffff) !== 0) return sign | 0x7e00;
    return sign | 0x7c00;
  }
  if (fExp <= 0x38000000) {
    // Half subnormal (or zero after rounding).
    if (fExp < 0x33000000) return sign;
    const e = fExp >>> 23;
    let sig = (0x00800000 + (f & 0x007fffff)) >>> (113 - e);
    if ((sig & 0x3fff) !== 0x1000 || (f & 0x7ff) !== 0) sig += 0x1000;
    return sign | (sig >>> 13);
  }
  const hExp = (fExp - 0x38000000) >>> 13;
  let sig = f & 0x007fffff;
  if ((sig & 0x3fff) !== 0x1000) sig += 0x1000;
  // A carry out of the significand bumps the exponent, possibly to inf: correct.
  return sign | ((sig >>> 13) + hExp);
}

/** Encodes a float32 value as bfloat16, rounding to nearest even; NaN stays NaN. */
export function floatToBf16(x: number): number {
  const f = f32Bits(x);
  if ((f & 0x7f800000) === 0x7f800000 && (f & 0x007fffff) !== 0) return ((f >>> 16) | 0x0040) & 0xffff;
  return ((f + 0x7fff + ((f >>> 16) & 1)) >>> 16) & 0xffff;
}

/**
 * Writes tensors as a safetensors file, in map order, packed without gaps.
 * F16 and BF16 are rounded to nearest even. The header is padded with spaces
 * to a multiple of 8 bytes so that the data section is 8-byte aligned.
 *
 * @throws OptionsError if a dtype is not F32/F16/BF16, a shape is invalid, or
 *   the data length does not match the shape
 */
export function serializeSafetensors(
  tensors: Map<string, TensorToWrite>,
  metadata?: Record<string, string>,
): Buffer {
  const header: Record<string, unknown> = {};
  if (metadata !== undefined) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') throw new OptionsError(`metadata entry "${k}" must be a string, got ${fmt(v)}`);
    }
    header.__metadata__ = metadata;
  }
  let offset = 0;
  const plan: { t: TensorToWrite; begin: number }[] = [];
  for (const [name, t] of tensors) {
    if (name === '__metadata__') throw new OptionsError('a tensor cannot be named "__metadata__"');
    if (!(t.dtype in ITEM_SIZE)) {
      throw new OptionsError(`tensor "${name}" has dtype ${fmt(t.dtype)}; supported dtypes are ${SUPPORTED}`);
    }
    let numel = 1;
    for (const d of t.shape) {
      if (!Number.isSafeInteger(d) || d < 0) {
        throw new OptionsError(`tensor "${name}" has invalid shape ${fmt(t.shape)}`);
      }
      numel *= d;
    }
    if (!(t.data instanceof Float32Array) || t.data.length !== numel) {
      throw new OptionsError(`tensor "${name}" has ${t.data?.length} values, shape ${fmt(t.shape)} needs ${numel}`);
    }
    const size = numel * ITEM_SIZE[t.dtype];
    header[name] = { dtype: t.dtype, shape: t.shape.slice(), data_offsets: [offset, offset + size] };
    plan.push({ t, begin: offset });
    offset += size;
  }
  let json = Buffer.from(JSON.stringify(header), 'utf8');
  const pad = (8 - (json.length % 8)) % 8;
  if (pad) json = Buffer.concat([json, Buffer.alloc(pad, 0x20)]);
  const dataStart = 8 + json.length;
  const out = Buffer.alloc(dataStart + offset);
  out.writeBigUInt64LE(BigInt(json.length), 0);
  json.copy(out, 8);
  for (const { t, begin } of plan) {
    const at = dataStart + begin;
    const { data } = t;
    if (t.dtype === 'F32') {
      if (LITTLE_ENDIAN_HOST) {
        out.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), at);
      } else {
        for (let i = 0; i < data.length; i++) out.writeFloatLE(data[i]!, at + 4 * i);
      }
    } else {
      const enc = t.dtype === 'F16' ? floatToHalf : floatToBf16;
      for (let i = 0; i < data.length; i++) out.writeUInt16LE(enc(data[i]!), at + 2 * i);
    }
  }
  return out;
}

/**
 * Reads and parses a safetensors file.
 *
 * @throws WeightsError if the file does not exist, cannot be read, or is malformed
 */
export async function readSafetensors(path: string): Promise<ParsedSafetensors> {
  return parseSafetensors(await readCheckpointBytes(path), path);
}

/** The bytes of a checkpoint file; WeightsError saying what is wrong when it cannot be read. */
export async function readCheckpointBytes(path: string): Promise<Buffer> {
  try {
    return await fsp.readFile(path);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'ENOENT') throw new WeightsError(`checkpoint file not found: ${path}`, { cause: e });
    if (err.code === 'EISDIR') throw new WeightsError(`checkpoint ${path} is a directory, not a file`, { cause: e });
    throw new WeightsError(`cannot read checkpoint ${path}: ${err.message}`, { cause: e });
  }
}
