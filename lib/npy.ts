/**
 * Minimal reader/writer for NumPy `.npy` files holding little-endian float32
 * arrays in C order — the format used for input tensors and reference outputs.
 */
import { readFile } from 'node:fs/promises';
import { endianness } from 'node:os';
import { InputError } from './errors';

const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // "\x93NUMPY"
const ALIGN = 64;
const HOST_LE = endianness() === 'LE';

/** A value of the Python literal subset that appears in `.npy` headers. */
type PyValue = string | number | boolean | null | PyValue[] | Map<string, PyValue>;

/**
 * Parses the Python dict literal of a `.npy` header (strings, integers,
 * True/False/None, tuples, lists and dicts) without evaluating anything.
 */
function parsePyLiteral(text: string): PyValue {
  let i = 0;
  const fail = (what: string): never => {
    const shown = text.trim();
    const clip = shown.length > 200 ? `${shown.slice(0, 200)}...` : shown;
    throw new Error(`${what} at offset ${i} of header ${JSON.stringify(clip)}`);
  };
  const skipWs = (): void => {
    while (i < text.length && /\s/.test(text[i]!)) i++;
  };
  const value = (depth: number): PyValue => {
    if (depth > 32) fail('nesting too deep');
    skipWs();
    const c = text[i];
    if (c === undefined) return fail('unexpected end');
    if (c === "'" || c === '"') {
      i++;
      let s = '';
      for (;;) {
        const ch = text[i++];
        if (ch === undefined) return fail('unterminated string');
        if (ch === c) return s;
        if (ch === '\\') {
          const esc = text[i++];
          if (esc === undefined) return fail('unterminated string');
          s += esc;
        } else {
          s += ch;
        }
      }
    }
    if (c === '(' || c === '[') {
      const close = c === '(' ? ')' : ']';
      i++;
      const items: PyValue[] = [];
      for (;;) {
        skipWs();
        if (text[i] === close) { i++; return items; }
        items.push(value(depth + 1));
        skipWs();
        if (text[i] === ',') i++;
        else if (text[i] !== close) fail(`expected ',' or '${close}'`);
      }
    }
    if (c === '{') {
      i++;
      const dict = new Map<string, PyValue>();
      for (;;) {
        skipWs();
        if (text[i] === '}') { i++; return dict; }
        const key = value(depth + 1);
        if (typeof key !== 'string') fail('dict key is not a string');
        skipWs();
        if (text[i] !== ':') fail("expected ':'");
        i++;
        if (dict.has(key as string)) fail(`duplicate key '${key as string}'`);
        dict.set(key as string, value(depth + 1));
        skipWs();
        if (text[i] === ',') i++;
        else if (text[i] !== '}') fail("expected ',' or '}'");
      }
    }
    const m = /^(?:(-?\d+)L?|True|False|None)/.exec(text.slice(i, i + 40));
    if (!m) return fail('unexpected token');
    i += m[0].length;
    if (m[1] !== undefined) {
      const n = Number(m[1]);
      if (!Number.isSafeInteger(n)) fail(`integer ${m[1]} out of range`);
      return n;
    }
    return m[0] === 'True' ? true : m[0] === 'False' ? false : null;
  };
  const result = value(0);
  skipWs();
  if (i !== text.length) fail('trailing characters');
  return result;
}

/**
 * Parses a `.npy` image held in memory. Only C-order little-endian float32
 * (`'<f4'`) arrays are accepted. The returned data is a zero-copy view of `buf`
 * when the payload is 4-byte aligned, otherwise an aligned copy.
 * @param source name used in error messages (e.g. the file path)
 * @throws InputError for anything that is not a valid float32 `.npy` image
 */
export function parseNpy(buf: Buffer | Uint8Array, source = '<buffer>'): { data: Float32Array; shape: number[] } {
  const bad = (msg: string, cause?: unknown): InputError =>
    new InputError(`${source}: ${msg}`, cause === undefined ? undefined : { cause });
  if (!(buf instanceof Uint8Array)) throw bad('expected a Buffer or Uint8Array holding a .npy file');
  if (buf.length < 10 || MAGIC.some((b, k) => buf[k] !== b)) {
    throw bad('not a .npy file (missing \\x93NUMPY magic)');
  }
  const major = buf[6]!;
  const minor = buf[7]!;
  if (minor !== 0 || major < 1 || major > 3) {
    throw bad(`unsupported .npy format version ${major}.${minor} (expected 1.0, 2.0 or 3.0)`);
  }
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const lenBytes = major === 1 ? 2 : 4;
  if (buf.length < 8 + lenBytes) throw bad('truncated .npy header');
  const headerLen = lenBytes === 2 ? view.getUint16(8, true) : view.getUint32(8, true);
  const headerStart = 8 + lenBytes;
  const dataOffset = headerStart + headerLen;
  if (dataOffset > buf.length) {
    throw bad(`truncated .npy header: declares ${headerLen} header bytes but only ${buf.length - headerStart} are present`);
  }
  const headerText = Buffer.from(buf.buffer, buf.byteOffset + headerStart, headerLen)
    .toString(major === 3 ? 'utf8' : 'latin1');

  let header: PyValue;
  try {
    header = parsePyLiteral(headerText);
  } catch (err) {
    throw bad(`malformed .npy header: ${(err as Error).message}`, err);
  }
  if (!(header instanceof Map)) throw bad('malformed .npy header: not a dict');
  const keys = [...header.keys()].sort().join(', ');
  if (keys !== 'descr, fortran_order, shape') {
    throw bad(`malformed .npy header: expected keys descr, fortran_order, shape; got ${keys || 'none'}`);
  }
  const descr = header.get('descr');
  const fortran = header.get('fortran_order');
  const shapeVal = header.get('shape');
  if (typeof descr !== 'string') {
    throw bad("unsupported dtype: expected float32 ('<f4'), got a structured dtype");
  }
  if (descr !== '<f4') {
    const hint = descr === '>f4' ? ' (big-endian float32; convert with arr.astype("<f4"))' : '';
    throw bad(`unsupported dtype: expected float32 ('<f4'), got '${descr}'${hint}`);
  }
  if (typeof fortran !== 'boolean') throw bad('malformed .npy header: fortran_order is not True/False');
  if (fortran) {
    throw bad('fortran_order=True (column-major) arrays are not supported; save np.ascontiguousarray(arr) instead');
  }
  if (!Array.isArray(shapeVal) || !shapeVal.every((d) => typeof d === 'number' && d >= 0)) {
    throw bad(`malformed .npy header: shape must be a tuple of non-negative integers, got ${JSON.stringify(shapeVal)}`);
  }
  const shape = shapeVal as number[];
  const count = shape.reduce((a, d) => a * d, 1);
  if (!Number.isSafeInteger(count * 4)) throw bad(`shape (${shape.join(', ')}) is too large`);
  const have = buf.length - dataOffset;
  if (have < count * 4) {
    throw bad(`truncated data: shape (${shape.join(', ')}) needs ${count * 4} bytes of float32, found ${have}`);
  }
  if (have > count * 4) {
    throw bad(`data length mismatch: shape (${shape.join(', ')}) needs ${count * 4} bytes of float32, found ${have}`);
  }

  const start = buf.byteOffset + dataOffset;
  let data: Float32Array;
  if (!HOST_LE) {
    data = new Float32Array(count);
    for (let k = 0; k < count; k++) data[k] = view.getFloat32(dataOffset + 4 * k, true);
  } else if (start % 4 === 0) {
    data = new Float32Array(buf.buffer, start, count);
  } else {
    data = new Float32Array(count);
    new Uint8Array(data.buffer).set(buf.subarray(dataOffset, dataOffset + count * 4));
  }
  return { data, shape: shape.slice() };
}

/**
 * Reads a `.npy` file from disk; see {@link parseNpy}.
 * @throws InputError when the file cannot be read or is not a float32 `.npy` file
 */
export async function readNpy(path: string): Promise<{ data: Float32Array; shape: number[] }> {
  let buf: Buffer;
  try {
    buf = await readFile(path);
  } catch (err) {
    throw new InputError(`cannot read .npy file ${path}: ${(err as Error).message}`, { cause: err });
  }
  return parseNpy(buf, path);
}

/**
 * Encodes a C-order float32 array as a `.npy` file (format 1.0, or 2.0 if the
 * header would not fit), padding the header so the data starts on a 64-byte boundary.
 * @throws InputError when `shape` is invalid or does not match `data.length`
 */
export function serializeNpy(data: Float32Array, shape: number[]): Buffer {
  if (!(data instanceof Float32Array)) throw new InputError('serializeNpy: data must be a Float32Array');
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw new InputError(`serializeNpy: shape must be an array of non-negative integers, got ${JSON.stringify(shape)}`);
  }
  const count = shape.reduce((a, d) => a * d, 1);
  if (count !== data.length) {
    throw new InputError(`serializeNpy: shape [${shape.join(', ')}] holds ${count} elements but data has ${data.length}`);
  }
  const shapeRepr = shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(', ')})`;
  const dict = `{'descr': '<f4', 'fortran_order': False, 'shape': ${shapeRepr}, }`;
  let major = 1;
  let prefix = 10;
  let total = Math.ceil((prefix + dict.length + 1) / ALIGN) * ALIGN;
  if (total - prefix > 0xffff) {
    major = 2;
    prefix = 12;
    total = Math.ceil((prefix + dict.length + 1) / ALIGN) * ALIGN;
  }
  const header = dict + ' '.repeat(total - prefix - dict.length - 1) + '\n';
  const out = Buffer.alloc(total + data.length * 4);
  out.set(MAGIC, 0);
  out[6] = major;
  out[7] = 0;
  if (major === 1) out.writeUInt16LE(header.length, 8);
  else out.writeUInt32LE(header.length, 8);
  out.write(header, prefix, 'latin1');
  if (HOST_LE) {
    out.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), total);
  } else {
    for (let k = 0; k < data.length; k++) out.writeFloatLE(data[k]!, total + 4 * k);
  }
  return out;
}
