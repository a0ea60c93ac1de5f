'use strict';
// Builds pickles opcode by opcode and torch.save-shaped zip archives, so tests can make
// malicious, damaged or unusual checkpoints that torch itself would never write.
const zlib = require('node:zlib');

const op = {
  PROTO: 0x80, STOP: 0x2e, MARK: 0x28, TUPLE: 0x74, TUPLE1: 0x85, TUPLE2: 0x86, EMPTY_TUPLE: 0x29,
  EMPTY_DICT: 0x7d, EMPTY_LIST: 0x5d, SETITEM: 0x73, SETITEMS: 0x75, APPEND: 0x61, REDUCE: 0x52,
  BUILD: 0x62, NEWOBJ: 0x81, BINPERSID: 0x51, NEWFALSE: 0x89, NONE: 0x4e, INST: 0x69, OBJ: 0x6f,
  EXT1: 0x82, BINPUT: 0x71, BINGET: 0x68, STACK_GLOBAL: 0x93, POP: 0x30,
};

const str = (s) => {
  const b = Buffer.from(s, 'utf8');
  const h = Buffer.alloc(5);
  h[0] = 0x58; // BINUNICODE
  h.writeUInt32LE(b.length, 1);
  return Buffer.concat([h, b]);
};
const int = (n) => {
  const b = Buffer.alloc(5);
  b[0] = 0x4a; // BININT
  b.writeInt32LE(n, 1);
  return b;
};
const global = (mod, name) => Buffer.from(`c${mod}\n${name}\n`, 'latin1');
const ops = (...codes) => Buffer.from(codes);

/** Concatenates parts (Buffers, opcode numbers, arrays of either) into one pickle. */
function pickle(...parts) {
  const flat = [];
  const walk = (p) => {
    if (Array.isArray(p)) p.forEach(walk);
    else if (typeof p === 'number') flat.push(Buffer.from([p]));
    else flat.push(p);
  };
  walk(parts);
  return Buffer.concat(flat);
}

const tuple = (...items) => [op.MARK, ...items, op.TUPLE];

/**
 * torch's tensor: _rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict()).
 * `storage` is { key, type: 'FloatStorage', numel }.
 */
function tensor({ key, type = 'FloatStorage', numel }, offset, size, stride) {
  return [
    global('torch._utils', '_rebuild_tensor_v2'),
    op.MARK,
    tuple(str('storage'), global('torch', type), str(key), str('cpu'), int(numel)), op.BINPERSID,
    int(offset), tuple(...size.map(int)), tuple(...stride.map(int)), op.NEWFALSE,
    global('collections', 'OrderedDict'), op.EMPTY_TUPLE, op.REDUCE,
    op.TUPLE, op.REDUCE,
  ];
}

/** {name: pickle parts of a value} as a dict under top-level key `key` (or at the top when null). */
function stateDictPickle(entries, key = 'model') {
  const items = Object.entries(entries).flatMap(([k, v]) => [str(k), v]);
  const sd = [op.EMPTY_DICT, op.MARK, ...items, op.SETITEMS];
  return key === null
    ? pickle(op.PROTO, 2, sd, op.STOP)
    : pickle(op.PROTO, 2, op.EMPTY_DICT, str(key), sd, op.SETITEM, op.STOP);
}

/**
 * A zip archive of `files` ({name: Buffer}), entries under `root/`. Entries are stored
 * unless listed in `deflate`; `badCrc` names entries whose CRC is written wrong, and
 * `claimSize` ({name: bytes}) overrides the uncompressed size the headers state.
 * `aliases` ({name: target}) adds central-directory entries that point at another entry's
 * bytes, as a zip bomb does.
 */
function zip(files, { root = 'archive', deflate = [], badCrc = [], claimSize = {}, aliases = {} } = {}) {
  const locals = [];
  const central = [];
  const headers = {};
  let offset = 0;
  for (const [rel, data] of Object.entries(files)) {
    const name = Buffer.from(`${root}/${rel}`, 'utf8');
    const method = deflate.includes(rel) ? 8 : 0;
    const body = method === 8 ? zlib.deflateRawSync(data) : data;
    const crc = (zlib.crc32(data) ^ (badCrc.includes(rel) ? 1 : 0)) >>> 0;
    const lh = Buffer.alloc(30);
    lh.writeUInt32LE(0x04034b50, 0);
    lh.writeUInt16LE(20, 4);
    lh.writeUInt16LE(method, 8);
    lh.writeUInt32LE(crc, 14);
    lh.writeUInt32LE(body.length, 18);
    const size = claimSize[rel] ?? data.length;
    lh.writeUInt32LE(size, 22);
    lh.writeUInt16LE(name.length, 26);
    const ch = Buffer.alloc(46);
    ch.writeUInt32LE(0x02014b50, 0);
    ch.writeUInt16LE(20, 4);
    ch.writeUInt16LE(20, 6);
    ch.writeUInt16LE(method, 10);
    ch.writeUInt32LE(crc, 16);
    ch.writeUInt32LE(body.length, 20);
    ch.writeUInt32LE(size, 24);
    ch.writeUInt16LE(name.length, 28);
    ch.writeUInt32LE(offset, 42);
    locals.push(lh, name, body);
    central.push(ch, name);
    headers[rel] = ch;
    offset += 30 + name.length + body.length;
  }
  for (const [alias, target] of Object.entries(aliases)) {
    // Same method, sizes, CRC and local-header offset as the target; only the name differs. The
    // local header keeps the target's name, which the central directory is trusted over.
    const ch = Buffer.from(headers[target]);
    const name = Buffer.from(`${root}/${alias}`, 'utf8');
    ch.writeUInt16LE(name.length, 28);
    central.push(ch, name);
  }
  const count = Object.keys(files).length + Object.keys(aliases).length;
  const cd = Buffer.concat(central);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(count, 8);
  end.writeUInt16LE(count, 10);
  end.writeUInt32LE(cd.length, 12);
  end.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, cd, end]);
}

const f32 = (...v) => Buffer.from(Float32Array.from(v).buffer);

function mulberry32(seed) {
  return () => {
    seed |= 0;
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

module.exports = { op, str, int, global, ops, pickle, tuple, tensor, stateDictPickle, zip, f32, mulberry32 };
