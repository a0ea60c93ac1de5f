/**
 * A restricted interpreter for the Python pickles inside PyTorch checkpoints.
 *
 * It understands the opcodes a saved state dict uses and builds inert
 * JavaScript values from them. Nothing is ever called: a GLOBAL only names
 * one of the few things a checkpoint needs (ordered dicts, tensors rebuilt
 * from storages, storage types, an argparse.Namespace of training options),
 * and REDUCE/NEWOBJ/BUILD are interpreted for exactly those names. Any other
 * global or opcode is refused with a WeightsError naming it, so a malicious
 * file cannot run code: there is no code path that could.
 */
import { WeightsError } from '../errors';

/** A Python tuple (kept apart from lists so a state dict's structure is unambiguous). */
export class PickleTuple {
  constructor(readonly items: unknown[]) {}
}

/** A dict or OrderedDict; `attrs` holds instance attributes set by BUILD (a state dict's `_metadata`). */
export class PickleDict {
  readonly entries = new Map<unknown, unknown>();
  attrs: PickleDict | null = null;
}

/** A set or frozenset. */
export class PickleSet {
  constructor(readonly items: unknown[]) {}
}

/** An argparse.Namespace: the training options some checkpoints carry. */
export class PickleNamespace {
  readonly fields = new Map<string, unknown>();
}

/** Element types of torch storages. */
export type StorageDType = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

/** Bytes per element of each storage type. */
export const STORAGE_ITEM_SIZE: Readonly<Record<StorageDType, number>> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1,
};

/** The class a GLOBAL like `torch FloatStorage` names: used only as a tag in persistent ids. */
export class StorageType {
  constructor(readonly name: string, readonly dtype: StorageDType) {}
}

/** A tensor as the pickle describes it: a view into a storage, not yet read. */
export class TensorRef {
  constructor(
    readonly storage: unknown,
    readonly offset: number,
    readonly shape: number[],
    readonly stride: number[],
  ) {}
}

/** One of the allowed callables, as the stack holds it between GLOBAL and REDUCE. */
class Callable {
  constructor(readonly qualname: string) {}
}

const STORAGE_TYPES: Record<string, StorageDType> = {
  DoubleStorage: 'F64', FloatStorage: 'F32', HalfStorage: 'F16', BFloat16Storage: 'BF16',
  LongStorage: 'I64', IntStorage: 'I32', ShortStorage: 'I16', CharStorage: 'I8',
  ByteStorage: 'U8', BoolStorage: 'BOOL',
};

/** Every global a checkpoint may name; anything else is refused. */
const CALLABLES = new Set([
  'collections.OrderedDict',
  'torch._utils._rebuild_tensor',
  'torch._utils._rebuild_tensor_v2',
  'torch._utils._rebuild_parameter',
  'torch._utils._rebuild_parameter_with_state',
  'argparse.Namespace',
  '_codecs.encode',
]);

export interface UnpickleOptions {
  /** Name for error messages. */
  source: string;
  /** Resolves a BINPERSID id (a torch storage reference) to a value; throws to refuse it. */
  persistentLoad(pid: unknown): unknown;
}

/** Longest LONG1/LONG4 accepted, in bytes: far beyond any integer a checkpoint holds. */
const MAX_LONG_BYTES = 64;
// A state dict of thousands of tensors runs some hundred thousand opcodes and memoizes tens of
// thousands of values; these bounds stop a crafted pickle from building hundreds of megabytes
// of values before it fails.
const MAX_VALUES = 1 << 22;
const MAX_MEMO = 1 << 18;
const MAX_MARK_DEPTH = 1 << 12;
const MAX_PROTOCOL = 5;

const OPCODE_NAMES: Record<number, string> = {
  0x28: 'MARK', 0x2e: 'STOP', 0x30: 'POP', 0x31: 'POP_MARK', 0x32: 'DUP', 0x46: 'FLOAT', 0x49: 'INT',
  0x4a: 'BININT', 0x4b: 'BININT1', 0x4c: 'LONG', 0x4d: 'BININT2', 0x4e: 'NONE', 0x50: 'PERSID',
  0x51: 'BINPERSID', 0x52: 'REDUCE', 0x53: 'STRING', 0x54: 'BINSTRING', 0x55: 'SHORT_BINSTRING',
  0x56: 'UNICODE', 0x58: 'BINUNICODE', 0x61: 'APPEND', 0x62: 'BUILD', 0x63: 'GLOBAL', 0x64: 'DICT',
  0x7d: 'EMPTY_DICT', 0x65: 'APPENDS', 0x67: 'GET', 0x68: 'BINGET', 0x69: 'INST', 0x6a: 'LONG_BINGET',
  0x6c: 'LIST', 0x5d: 'EMPTY_LIST', 0x6f: 'OBJ', 0x70: 'PUT', 0x71: 'BINPUT', 0x72: 'LONG_BINPUT',
  0x73: 'SETITEM', 0x74: 'TUPLE', 0x29: 'EMPTY_TUPLE', 0x75: 'SETITEMS', 0x47: 'BINFLOAT',
  0x80: 'PROTO', 0x81: 'NEWOBJ', 0x82: 'EXT1', 0x83: 'EXT2', 0x84: 'EXT4', 0x85: 'TUPLE1',
  0x86: 'TUPLE2', 0x87: 'TUPLE3', 0x88: 'NEWTRUE', 0x89: 'NEWFALSE', 0x8a: 'LONG1', 0x8b: 'LONG4',
  0x42: 'BINBYTES', 0x43: 'SHORT_BINBYTES', 0x8c: 'SHORT_BINUNICODE', 0x8d: 'BINUNICODE8',
  0x8e: 'BINBYTES8', 0x8f: 'EMPTY_SET', 0x90: 'ADDITEMS', 0x91: 'FROZENSET', 0x92: 'NEWOBJ_EX',
  0x93: 'STACK_GLOBAL', 0x94: 'MEMOIZE', 0x95: 'FRAME', 0x96: 'BYTEARRAY8', 0x97: 'NEXT_BUFFER',
  0x98: 'READONLY_BUFFER',
};

/** Why an opcode that exists in Python's pickle format is refused here. */
const REFUSED: Record<number, string> = {
  0x69: 'it constructs an object from a class named in the stream',
  0x6f: 'it constructs an object from a class on the stack',
  0x82: 'extension registry codes are not part of a checkpoint',
  0x83: 'extension registry codes are not part of a checkpoint',
  0x84: 'extension registry codes are not part of a checkpoint',
  0x92: 'keyword construction is not part of a checkpoint',
  0x97: 'out-of-band buffers are not part of a checkpoint',
  0x98: 'out-of-band buffers are not part of a checkpoint',
  0x50: 'torch.save writes binary persistent ids (BINPERSID) only',
};

const utf8 = new TextDecoder('utf-8', { fatal: true });
/** ISO-8859-1 (a WHATWG TextDecoder 'latin1' would be windows-1252). */
const latin1 = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('latin1');

function describe(v: unknown): string {
  if (v === null) return 'None';
  if (v instanceof Callable) return v.qualname;
  if (v instanceof StorageType) return `torch.${v.name}`;
  if (v instanceof PickleTuple) return `a tuple of ${v.items.length}`;
  if (v instanceof PickleDict) return 'a dict';
  if (v instanceof TensorRef) return 'a tensor';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'string') return JSON.stringify(v.length > 40 ? v.slice(0, 40) + '...' : v);
  return typeof v;
}

/**
 * Interprets a pickle and returns the value STOP leaves on the stack.
 * @throws WeightsError on any opcode, global or structure outside what a checkpoint needs,
 *   and on truncated or malformed input
 */
export function unpickle(bytes: Uint8Array, options: UnpickleOptions): unknown {
  const { source } = options;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const len = bytes.byteLength;
  let pos = 0;
  let opAt = 0;
  let stack: unknown[] = [];
  const marks: unknown[][] = [];
  const memo = new Map<number, unknown>();

  const fail = (msg: string): never => {
    throw new WeightsError(`${source}: pickle byte ${opAt}: ${msg}`);
  };
  const need = (n: number, what: string): void => {
    if (n > len - pos) fail(`${what} needs ${n} bytes but the pickle ends after ${len - pos}`);
  };
  const u8 = (): number => {
    need(1, 'an argument');
    return bytes[pos++]!;
  };
  const u16 = (): number => {
    need(2, 'an argument');
    const v = view.getUint16(pos, true);
    pos += 2;
    return v;
  };
  const u32 = (): number => {
    need(4, 'an argument');
    const v = view.getUint32(pos, true);
    pos += 4;
    return v;
  };
  const u64 = (): number => {
    need(8, 'an argument');
    const v = view.getBigUint64(pos, true);
    pos += 8;
    if (v > BigInt(len)) fail(`length ${v} runs past the end of the pickle (${len} bytes)`);
    return Number(v);
  };
  const take = (n: number, what: string): Uint8Array => {
    need(n, what);
    const b = bytes.subarray(pos, pos + n);
    pos += n;
    return b;
  };
  const str = (n: number): string => {
    const b = take(n, 'a string');
    try {
      return utf8.decode(b);
    } catch {
      return fail('string is not valid UTF-8');
    }
  };
  const line = (what: string): string => {
    const end = bytes.indexOf(0x0a, pos);
    if (end < 0) fail(`${what} has no terminating newline`);
    const s = latin1(bytes.subarray(pos, end));
    pos = end + 1;
    return s;
  };
  const pop = (): unknown => {
    if (stack.length === 0) fail('stack underflow');
    return stack.pop();
  };
  const top = (): unknown => {
    if (stack.length === 0) fail('stack underflow');
    return stack[stack.length - 1];
  };
  const popMark = (): unknown[] => {
    const items = stack;
    const prev = marks.pop();
    if (prev === undefined) fail('no MARK to pop to');
    stack = prev!;
    return items;
  };
  const remember = (i: number): void => {
    if (memo.size >= MAX_MEMO && !memo.has(i)) fail(`memo holds more than ${MAX_MEMO} entries, more than any checkpoint uses`);
    memo.set(i, top());
  };
  const int = (v: bigint): number | bigint => (v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v);
  const long = (b: Uint8Array): number | bigint => {
    if (b.length > MAX_LONG_BYTES) fail(`integer of ${b.length} bytes is larger than any checkpoint value`);
    if (b.length === 0) return 0;
    let v = 0n;
    for (let i = b.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]!);
    if (b[b.length - 1]! & 0x80) v -= 1n << BigInt(8 * b.length);
    return int(v);
  };
  const global = (module: string, name: string): unknown => {
    const qualname = `${module}.${name}`;
    if (module === 'torch' && Object.hasOwn(STORAGE_TYPES, name)) return new StorageType(name, STORAGE_TYPES[name]!);
    if (CALLABLES.has(qualname)) return new Callable(qualname);
    return fail(`refusing global ${qualname}: a checkpoint may only name ${[...CALLABLES].join(', ')} and torch storage types`);
  };
  const setItem = (target: unknown, k: unknown, v: unknown, op: string): void => {
    if (target instanceof PickleDict) target.entries.set(k, v);
    else if (target instanceof PickleNamespace && typeof k === 'string') target.fields.set(k, v);
    else fail(`${op} on ${describe(target)}, expected a dict`);
  };
  const call = (fn: unknown, args: unknown, op: string): unknown => {
    if (!(fn instanceof Callable)) return fail(`${op} on ${describe(fn)}, which is not an allowed callable`);
    if (!(args instanceof PickleTuple)) return fail(`${op} of ${fn.qualname} with ${describe(args)} instead of an argument tuple`);
    const a = args.items;
    const arity = (min: number, max = min): void => {
      if (a.length < min || a.length > max) fail(`${fn.qualname} called with ${a.length} arguments, expected ${min === max ? min : `${min} to ${max}`}`);
    };
    switch (fn.qualname) {
      case 'collections.OrderedDict':
        arity(0);
        return new PickleDict();
      case 'argparse.Namespace':
        arity(0);
        return new PickleNamespace();
      case '_codecs.encode':
        arity(2);
        if (typeof a[0] !== 'string' || a[1] !== 'latin1') fail('_codecs.encode is allowed only as (str, "latin1"), how pickle stores bytes');
        return Uint8Array.from(a[0] as string, (c) => c.charCodeAt(0) & 0xff);
      case 'torch._utils._rebuild_tensor':
      case 'torch._utils._rebuild_tensor_v2': {
        if (fn.qualname.endsWith('_v2')) arity(6, 7);
        else arity(4);
        const [storage, offset, size, stride] = a;
        const dims = (v: unknown, what: string): number[] => {
          if (!(v instanceof PickleTuple) || !v.items.every((d) => typeof d === 'number' && Number.isSafeInteger(d) && d >= 0))
            return fail(`tensor ${what} must be a tuple of non-negative integers, got ${describe(v)}`);
          return v.items as number[];
        };
        if (typeof offset !== 'number' || !Number.isSafeInteger(offset) || offset < 0) fail(`tensor storage offset must be a non-negative integer, got ${describe(offset)}`);
        const shape = dims(size, 'size');
        const strides = dims(stride, 'stride');
        if (shape.length !== strides.length) fail(`tensor size has ${shape.length} dimensions but stride has ${strides.length}`);
        return new TensorRef(storage, offset as number, shape, strides);
      }
      case 'torch._utils._rebuild_parameter':
        arity(3);
        if (!(a[0] instanceof TensorRef)) fail(`_rebuild_parameter of ${describe(a[0])}, expected a tensor`);
        return a[0];
      case 'torch._utils._rebuild_parameter_with_state':
        arity(4);
        if (!(a[0] instanceof TensorRef)) fail(`_rebuild_parameter_with_state of ${describe(a[0])}, expected a tensor`);
        return a[0];
      default:
        return fail(`${fn.qualname} cannot be called`);
    }
  };

  let executed = 0;
  for (;;) {
    opAt = pos;
    if (++executed > MAX_VALUES) fail(`more than ${MAX_VALUES} opcodes, more than any checkpoint's pickle runs`);
    if (pos >= len) fail('the pickle ends without a STOP opcode; the file is truncated');
    const op = bytes[pos++]!;
    switch (op) {
      case 0x80: { // PROTO
        const p = u8();
        if (p > MAX_PROTOCOL) fail(`pickle protocol ${p} is newer than the highest known (${MAX_PROTOCOL})`);
        break;
      }
      case 0x95: // FRAME: a length hint only
        u64();
        break;
      case 0x2e: { // STOP
        const v = pop();
        if (stack.length !== 0 || marks.length !== 0) fail('STOP with values left on the stack');
        return v;
      }
      case 0x28: // MARK
        if (marks.length >= MAX_MARK_DEPTH) fail(`MARKs nested deeper than ${MAX_MARK_DEPTH}`);
        marks.push(stack);
        stack = [];
        break;
      case 0x30: pop(); break; // POP
      case 0x31: popMark(); break; // POP_MARK
      case 0x32: stack.push(top()); break; // DUP
      case 0x4e: stack.push(null); break; // NONE
      case 0x88: stack.push(true); break; // NEWTRUE
      case 0x89: stack.push(false); break; // NEWFALSE
      case 0x4a: { // BININT
        need(4, 'BININT');
        stack.push(view.getInt32(pos, true));
        pos += 4;
        break;
      }
      case 0x4b: stack.push(u8()); break; // BININT1
      case 0x4d: stack.push(u16()); break; // BININT2
      case 0x8a: stack.push(long(take(u8(), 'LONG1'))); break; // LONG1
      case 0x8b: { // LONG4
        need(4, 'LONG4');
        const n = view.getInt32(pos, true);
        pos += 4;
        if (n < 0) fail('LONG4 with a negative length');
        stack.push(long(take(n, 'LONG4')));
        break;
      }
      case 0x47: { // BINFLOAT (big-endian)
        need(8, 'BINFLOAT');
        stack.push(view.getFloat64(pos, false));
        pos += 8;
        break;
      }
      case 0x58: stack.push(str(u32())); break; // BINUNICODE
      case 0x8c: stack.push(str(u8())); break; // SHORT_BINUNICODE
      case 0x8d: stack.push(str(u64())); break; // BINUNICODE8
      case 0x54: stack.push(latin1(take(u32(), 'BINSTRING'))); break; // BINSTRING (Python 2 str)
      case 0x55: stack.push(latin1(take(u8(), 'SHORT_BINSTRING'))); break; // SHORT_BINSTRING
      case 0x42: stack.push(take(u32(), 'BINBYTES').slice()); break; // BINBYTES
      case 0x43: stack.push(take(u8(), 'SHORT_BINBYTES').slice()); break; // SHORT_BINBYTES
      case 0x8e: // BINBYTES8
      case 0x96: stack.push(take(u64(), 'BINBYTES8').slice()); break; // BYTEARRAY8
      case 0x7d: stack.push(new PickleDict()); break; // EMPTY_DICT
      case 0x5d: stack.push([]); break; // EMPTY_LIST
      case 0x29: stack.push(new PickleTuple([])); break; // EMPTY_TUPLE
      case 0x8f: stack.push(new PickleSet([])); break; // EMPTY_SET
      case 0x74: { // TUPLE (popMark replaces `stack`, so pop before pushing)
        const items = popMark();
        stack.push(new PickleTuple(items));
        break;
      }
      case 0x85: stack.push(new PickleTuple([pop()])); break; // TUPLE1
      case 0x86: { // TUPLE2
        const b = pop();
        stack.push(new PickleTuple([pop(), b]));
        break;
      }
      case 0x87: { // TUPLE3
        const c = pop();
        const b = pop();
        stack.push(new PickleTuple([pop(), b, c]));
        break;
      }
      case 0x6c: { // LIST
        const items = popMark();
        stack.push(items);
        break;
      }
      case 0x64: { // DICT
        const items = popMark();
        if (items.length % 2) fail('DICT with an odd number of items');
        const d = new PickleDict();
        for (let i = 0; i < items.length; i += 2) d.entries.set(items[i], items[i + 1]);
        stack.push(d);
        break;
      }
      case 0x91: { // FROZENSET
        const items = popMark();
        stack.push(new PickleSet(items));
        break;
      }
      case 0x61: { // APPEND
        const v = pop();
        const l = top();
        if (!Array.isArray(l)) fail(`APPEND to ${describe(l)}, expected a list`);
        (l as unknown[]).push(v);
        break;
      }
      case 0x65: { // APPENDS
        const items = popMark();
        const l = top();
        if (!Array.isArray(l)) fail(`APPENDS to ${describe(l)}, expected a list`);
        for (const v of items) (l as unknown[]).push(v);
        break;
      }
      case 0x90: { // ADDITEMS
        const items = popMark();
        const s = top();
        if (!(s instanceof PickleSet)) fail(`ADDITEMS to ${describe(s)}, expected a set`);
        for (const v of items) (s as PickleSet).items.push(v);
        break;
      }
      case 0x73: { // SETITEM
        const v = pop();
        const k = pop();
        setItem(top(), k, v, 'SETITEM');
        break;
      }
      case 0x75: { // SETITEMS
        const items = popMark();
        if (items.length % 2) fail('SETITEMS with an odd number of items');
        const d = top();
        for (let i = 0; i < items.length; i += 2) setItem(d, items[i], items[i + 1], 'SETITEMS');
        break;
      }
      case 0x71: remember(u8()); break; // BINPUT
      case 0x72: remember(u32()); break; // LONG_BINPUT
      case 0x94: remember(memo.size); break; // MEMOIZE
      case 0x68: // BINGET
      case 0x6a: { // LONG_BINGET
        const i = op === 0x68 ? u8() : u32();
        if (!memo.has(i)) fail(`memo entry ${i} was never stored`);
        stack.push(memo.get(i));
        break;
      }
      case 0x63: { // GLOBAL "module\nname\n"
        const module = line('GLOBAL module');
        const name = line('GLOBAL name');
        stack.push(global(module, name));
        break;
      }
      case 0x93: { // STACK_GLOBAL
        const name = pop();
        const module = pop();
        if (typeof module !== 'string' || typeof name !== 'string') fail('STACK_GLOBAL needs two strings');
        stack.push(global(module as string, name as string));
        break;
      }
      case 0x52: { // REDUCE
        const args = pop();
        const fn = pop();
        stack.push(call(fn, args, 'REDUCE'));
        break;
      }
      case 0x81: { // NEWOBJ: cls.__new__(cls, *args); only for the record types
        const args = pop();
        const cls = pop();
        if (!(cls instanceof Callable) || (cls.qualname !== 'collections.OrderedDict' && cls.qualname !== 'argparse.Namespace'))
          fail(`NEWOBJ of ${describe(cls)}: only collections.OrderedDict and argparse.Namespace may be created`);
        stack.push(call(cls, args, 'NEWOBJ'));
        break;
      }
      case 0x62: { // BUILD: set state on the object below
        const state = pop();
        const obj = top();
        if (obj instanceof PickleDict && state instanceof PickleDict) obj.attrs = state;
        else if (obj instanceof PickleDict && state === null) break;
        else if (obj instanceof PickleNamespace && state instanceof PickleDict) {
          for (const [k, v] of state.entries) {
            if (typeof k !== 'string') fail('BUILD of argparse.Namespace with a non-string attribute name');
            obj.fields.set(k as string, v);
          }
        } else fail(`BUILD of ${describe(obj)} with ${describe(state)}: no such state in a checkpoint`);
        break;
      }
      case 0x51: // BINPERSID
        stack.push(options.persistentLoad(pop()));
        break;
      default: {
        const name = OPCODE_NAMES[op];
        if (name === undefined) fail(`unknown opcode 0x${op.toString(16).padStart(2, '0')}; the file is not a pickle or is corrupt`);
        fail(`refusing opcode ${name}${REFUSED[op] ? `: ${REFUSED[op]}` : ': it is not used by torch.save'}`);
      }
    }
  }
}
