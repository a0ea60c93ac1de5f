'use strict';
// PyTorch .pth checkpoints: the zip container, the restricted unpickler, and parity with safetensors.
const test = require('tape');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { loadModel, readNpy, readSafetensors, WeightsError, OptionsError } = require('../dist');
const { parseCheckpoint, readCheckpoint } = require('../dist/weights/checkpoint');
const { unpickle } = require('../dist/weights/pickle');
const { TorchZip } = require('../dist/weights/pthZip');
const h = require('./helpers/torchArchive');

const dir = path.join(__dirname, 'fixtures', 'pth');
const fx = (name) => path.join(dir, name);
const golden = require('./fixtures/pth/golden.json');
const NUM_HEADS = golden.model.numHeads;

/** Runs `fn` (sync or async) and asserts a WeightsError whose message matches every pattern. */
async function rejects(t, fn, patterns, label, ErrorClass = WeightsError) {
  let err = null;
  try {
    await fn();
  } catch (e) {
    err = e;
  }
  t.ok(err instanceof ErrorClass, `${label}: ${ErrorClass.name}${err && !(err instanceof ErrorClass) ? ` (got ${err.stack})` : ''}`);
  for (const re of patterns) t.match(err ? err.message : '', re, `${label}: message matches ${re}`);
}

const noStorage = () => {
  throw new Error('no persistent ids expected');
};
const unpickleBytes = (buf) => unpickle(buf, { source: 'test', persistentLoad: noStorage });

test('a torch.save state dict reads as the same tensors as its safetensors twin', async (t) => {
  const pth = await readCheckpoint(fx('deit-mini.pth'));
  const st = await readSafetensors(fx('deit-mini.safetensors'));
  t.equal(pth.format, 'pth');
  t.equal(pth.stateDictKey, 'model', 'the state dict under "model" is chosen over optimizer tensors');
  t.deepEqual([...pth.tensors.keys()], [...st.tensors.keys()], 'same names in the same order');
  let identical = 0;
  for (const [name, a] of st.tensors) {
    const b = pth.tensors.get(name);
    const same = JSON.stringify(a.shape) === JSON.stringify(b.shape) &&
      Buffer.from(a.data.buffer, a.data.byteOffset, a.data.byteLength).equals(Buffer.from(b.data.buffer, b.data.byteOffset, b.data.byteLength));
    if (same) identical++;
    else t.fail(`${name} differs`);
  }
  t.equal(identical, st.tensors.size, `all ${identical} tensors bit-identical`);
  t.deepEqual([...new Set(pth.dtypes.values())], ['F32']);
  t.deepEqual(pth.metadata, { 'evit.keep_rate': '0.7', 'evit.drop_loc': '1,2', 'evit.fuse': 'true' },
    'the EViT training args become the schedule defaults');
  t.end();
});

test('a .pth model gives logits identical to the same weights in safetensors, and matches the float64 reference', async (t) => {
  const x = await readNpy(fx(golden.input));
  const fromPth = await loadModel(fx('deit-mini.pth'), { numHeads: NUM_HEADS, card: false });
  const fromSt = await loadModel(fx('deit-mini.safetensors'), { numHeads: NUM_HEADS, card: false, dropLoc: [1, 2] });
  t.deepEqual(fromPth.schedule.dropBlocks, [1, 2], 'drop blocks from the checkpoint args');
  t.equal(fromPth.schedule.keepRate, 0.7);
  t.equal(fromPth.schedule.fused, true);
  for (const c of golden.deit.cases) {
    const opts = { keepRate: c.keepRate, dropLoc: c.dropLoc, fuse: c.fuse };
    const a = await fromPth.forward(x, opts);
    const b = await fromSt.forward(x, opts);
    t.ok(Buffer.from(a.logits.buffer).equals(Buffer.from(b.logits.buffer)), `${c.name}: logits bit-identical`);
    t.deepEqual(a.kept.map((k) => Array.from(k.tokens)), b.kept.map((k) => Array.from(k.tokens)), `${c.name}: kept tokens identical`);
    const diff = Math.max(...c.logits.flat().map((v, i) => Math.abs(v - a.logits[i])));
    t.ok(diff < 1e-4, `${c.name}: within 1e-4 of the float64 reference (${diff.toExponential(2)})`);
    const per = a.kept.map((k) => [0, 1].map((i) => Array.from(k.tokens.subarray(i * k.shape[1], (i + 1) * k.shape[1]))));
    t.deepEqual(per, c.kept.map((k) => k.tokens), `${c.name}: kept tokens match the reference`);
  }
  fromPth.dispose();
  fromSt.dispose();
  t.end();
});

test('storage views: offsets, strides, shared storages, scalars and every float dtype', async (t) => {
  const c = await readCheckpoint(fx('views.pth'));
  const v = (name) => Array.from(c.tensors.get(name).data);
  const shape = (name) => c.tensors.get(name).shape;
  const base = Array.from({ length: 24 }, (_, i) => i); // torch.arange(24), viewed as [4, 6]
  t.equal(c.stateDictKey, 'state_dict');
  t.deepEqual(shape('whole'), [4, 6]);
  t.deepEqual(v('whole'), base);
  t.deepEqual(v('rows_1_3'), base.slice(6, 18), 'rows 1..2: offset 6 into the shared storage');
  const transposed = [];
  for (let i = 0; i < 6; i++) for (let j = 0; j < 4; j++) transposed.push(base[j * 6 + i]);
  t.deepEqual(shape('transposed'), [6, 4]);
  t.deepEqual(v('transposed'), transposed, 'transposed view is materialised row-major');
  t.deepEqual(v('column_2'), [2, 8, 14, 20], 'column view: offset 2, stride 6');
  t.deepEqual(v('expanded'), [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2], 'expanded view (stride 0)');
  t.deepEqual(shape('scalar'), []);
  t.deepEqual(v('scalar'), [2.5]);
  t.deepEqual(shape('empty'), [0, 5]);
  t.deepEqual(v('empty'), []);
  t.deepEqual(v('half'), [1, -2, 0.5, 65504]);
  t.deepEqual(v('bfloat16'), [1, -3, 0.25, 256]);
  t.deepEqual(v('double'), [0.1, 1e-3, -7, 3].map(Math.fround), 'float64 rounded to float32');
  t.deepEqual([c.dtypes.get('half'), c.dtypes.get('bfloat16'), c.dtypes.get('double')], ['F16', 'BF16', 'F64']);
  t.deepEqual([...c.skipped], [['long', { dtype: 'I64', shape: [3] }]], 'integer tensors are listed, not decoded');
  t.end();
});

test('the format is chosen by content, not by the file name', async (t) => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'evit-pth-'));
  const pthNamedSt = path.join(tmp, 'weights.safetensors');
  const stNamedPth = path.join(tmp, 'weights.pth');
  fs.copyFileSync(fx('deit-mini.pth'), pthNamedSt);
  fs.copyFileSync(fx('deit-mini.safetensors'), stNamedPth);
  t.equal((await readCheckpoint(pthNamedSt)).format, 'pth');
  t.equal((await readCheckpoint(stNamedPth)).format, 'safetensors');
  const m = await loadModel(pthNamedSt, { numHeads: NUM_HEADS, card: false });
  t.equal(m.architecture.depth, golden.model.depth, 'a .pth named .safetensors loads');
  m.dispose();
  fs.rmSync(tmp, { recursive: true, force: true });
  t.end();
});

test('state dict location: "model", "state_dict", top level with module. prefixes, or an explicit key', async (t) => {
  const w = h.tensor({ key: '0', numel: 2 }, 0, [2], [1]);
  const files = (pk) => h.zip({ 'data.pkl': pk, 'data/0': h.f32(1, 2) });
  for (const key of ['model', 'state_dict', 'model_ema']) {
    const c = await parseCheckpoint(files(h.stateDictPickle({ 'a.weight': w }, key)), 'x');
    t.equal(c.stateDictKey, key, `found under "${key}"`);
  }
  const top = await parseCheckpoint(files(h.stateDictPickle({ 'module.a.weight': w, 'module.b': w }, null)), 'x');
  t.equal(top.stateDictKey, null);
  t.deepEqual([...top.tensors.keys()], ['a.weight', 'b'], 'DDP module. prefix removed');
  t.deepEqual(Array.from(top.tensors.get('b').data), [1, 2], 'two tensors may share one storage');
  const mixed = await parseCheckpoint(files(h.stateDictPickle({ 'module.a': w, b: w }, null)), 'x');
  t.deepEqual([...mixed.tensors.keys()], ['module.a', 'b'], 'a prefix on only some names is kept');
  const buf = await fs.promises.readFile(fx('deit-mini.pth'));
  await rejects(t, () => parseCheckpoint(buf, 'x', { key: 'nope' }), [/no key "nope"/, /model, optimizer, epoch, args/], 'unknown key', OptionsError);
  await rejects(t, () => parseCheckpoint(buf, 'x', { key: 'epoch' }), [/"epoch" is not a state dict/], 'key of a non-dict');
  await rejects(t, () => parseCheckpoint(files(h.pickle(h.op.PROTO, 2, h.op.EMPTY_DICT, h.str('epoch'), h.int(3), h.op.SETITEM, h.op.STOP)), 'x'),
    [/no state dict found/, /epoch/], 'no tensors anywhere');
  t.end();
});

test('malicious pickles are refused before anything could run', async (t) => {
  const marker = path.join(os.tmpdir(), `evit-pwned-${process.pid}`);
  const call = (g, ...args) => h.pickle(h.op.PROTO, 2, g, h.tuple(...args), h.op.REDUCE, h.op.STOP);
  const cases = [
    ['GLOBAL os.system', call(h.global('os', 'system'), h.str(`touch ${marker}`)), /refusing global os\.system/],
    ['GLOBAL builtins.eval', call(h.global('builtins', 'eval'), h.str('1+1')), /refusing global builtins\.eval/],
    ['GLOBAL __builtin__.exec', call(h.global('__builtin__', 'exec'), h.str('x')), /refusing global __builtin__\.exec/],
    ['STACK_GLOBAL posix.system', h.pickle(h.op.PROTO, 4, h.str('posix'), h.str('system'), h.op.STACK_GLOBAL, h.tuple(h.str('id')), h.op.REDUCE, h.op.STOP),
      /refusing global posix\.system/],
    ['torch.load itself', call(h.global('torch', 'load'), h.str('x.pth')), /refusing global torch\.load/],
    ['subprocess via a storage-looking name', call(h.global('torch', 'FloatStorage.__init__'), h.str('x')), /refusing global torch\.FloatStorage\.__init__/],
    ['REDUCE on a storage type', call(h.global('torch', 'FloatStorage'), h.int(4)), /REDUCE on torch\.FloatStorage, which is not an allowed callable/],
    ['REDUCE on a string', h.pickle(h.op.PROTO, 2, h.str('os.system'), h.tuple(), h.op.REDUCE, h.op.STOP), /REDUCE on "os\.system"/],
    ['INST', h.pickle(h.op.PROTO, 2, h.op.MARK, Buffer.from('ios\nsystem\n', 'latin1'), h.op.STOP), /refusing opcode INST/],
    ['OBJ', h.pickle(h.op.PROTO, 2, h.op.MARK, h.global('collections', 'OrderedDict'), h.op.OBJ, h.op.STOP), /refusing opcode OBJ/],
    ['EXT1', h.pickle(h.op.PROTO, 2, h.op.EXT1, 1, h.op.STOP), /refusing opcode EXT1/],
    ['NEWOBJ of a tensor rebuild', h.pickle(h.op.PROTO, 2, h.global('torch._utils', '_rebuild_tensor_v2'), h.op.EMPTY_TUPLE, h.op.NEWOBJ, h.op.STOP),
      /NEWOBJ of torch\._utils\._rebuild_tensor_v2/],
    ['BUILD on a list', h.pickle(h.op.PROTO, 2, h.op.EMPTY_LIST, h.op.EMPTY_DICT, h.op.BUILD, h.op.STOP), /BUILD of a list with a dict/],
    ['_codecs.encode with another codec', call(h.global('_codecs', 'encode'), h.str('x'), h.str('rot13')), /_codecs\.encode is allowed only as/],
    ['OrderedDict with arguments', call(h.global('collections', 'OrderedDict'), h.str('x')), /collections\.OrderedDict called with 1 arguments, expected 0/],
    ['text-protocol INT', h.pickle(h.op.PROTO, 2, Buffer.from('I1\n', 'latin1'), h.op.STOP), /refusing opcode INT/],
    ['unknown opcode', h.pickle(h.op.PROTO, 2, 0xff, h.op.STOP), /unknown opcode 0xff/],
    ['protocol 6', h.pickle(h.op.PROTO, 6, h.op.NONE, h.op.STOP), /protocol 6 is newer/],
  ];
  for (const [label, bytes, re] of cases) await rejects(t, () => unpickleBytes(bytes), [re, /^test: pickle byte \d+: /], label);

  // The same os.system pickle as the data.pkl of an archive, loaded the way users load models.
  const tmp = path.join(os.tmpdir(), `evit-malicious-${process.pid}.pth`);
  fs.writeFileSync(tmp, h.zip({ 'data.pkl': cases[0][1], version: Buffer.from('3\n') }));
  await rejects(t, () => loadModel(tmp, { numHeads: 2, card: false }), [/refusing global os\.system/, /data\.pkl/], 'loadModel of a malicious .pth');
  t.notOk(fs.existsSync(marker), 'the command in the pickle did not run');
  fs.rmSync(tmp, { force: true });
  t.end();
});

test('allowed record types: argparse.Namespace, bytes, large ints, memo references', (t) => {
  const ns = h.pickle(
    h.op.PROTO, 2, h.op.EMPTY_DICT,
    h.str('args'), h.global('argparse', 'Namespace'), h.op.EMPTY_TUPLE, h.op.NEWOBJ,
    h.op.EMPTY_DICT, h.str('base_keep_rate'), Buffer.from([0x47, 0x3f, 0xe0, 0, 0, 0, 0, 0, 0]), h.op.SETITEM, h.op.BUILD,
    h.op.SETITEM,
    h.str('big'), Buffer.from([0x8a, 9, 0, 0, 0, 0, 0, 0, 0, 0, 1]), h.op.SETITEM, // LONG1 2^64
    h.str('neg'), Buffer.from([0x8a, 1, 0xff]), h.op.SETITEM, // LONG1 -1
    h.str('raw'), Buffer.from([0x43, 2, 0xde, 0xad]), h.op.SETITEM, // SHORT_BINBYTES
    h.str('same'), h.op.EMPTY_LIST, h.op.BINPUT, 7, h.op.POP, h.op.BINGET, 7, h.op.SETITEM,
    h.op.STOP,
  );
  const top = unpickleBytes(ns);
  t.equal(top.entries.get('args').fields.get('base_keep_rate'), 0.5, 'Namespace fields from BUILD');
  t.equal(top.entries.get('big'), 2n ** 64n, 'integers beyond 2^53 stay exact as BigInt');
  t.equal(top.entries.get('neg'), -1);
  t.deepEqual(Array.from(top.entries.get('raw')), [0xde, 0xad]);
  t.deepEqual(top.entries.get('same'), [], 'memo');
  t.end();
});

test('damaged archives: truncation, CRC, sizes and out-of-range storages give typed errors', async (t) => {
  const good = await fs.promises.readFile(fx('deit-mini.pth'));
  for (const cut of [0, 3, 100, good.length >> 1, good.length - 23, good.length - 1]) {
    await rejects(t, () => parseCheckpoint(good.subarray(0, cut), 'cut.pth'), [/cut\.pth/], `truncated to ${cut} bytes`);
  }
  await rejects(t, () => parseCheckpoint(good.subarray(0, good.length - 1), 'x'), [/zip/, /truncated/], 'one byte short');

  // Flip one byte inside the storage of blocks.0.attn.qkv.weight (the data, not the headers).
  const names = (await readCheckpoint(fx('deit-mini.pth'))).tensors;
  const qkv = names.get('blocks.0.attn.qkv.weight').data;
  const at = qkv.byteOffset + 100;
  const flipped = Buffer.from(good);
  flipped[at] ^= 0x10;
  await rejects(t, () => parseCheckpoint(flipped, 'flip.pth'), [/flip\.pth: zip entry deit-mini\/data\/\d+ fails its CRC-32 check/, /corrupt/], 'bad CRC');

  const w = (offset, size, stride, numel = 6) => h.stateDictPickle({ w: h.tensor({ key: '0', numel }, offset, size, stride) });
  const six = h.f32(0, 1, 2, 3, 4, 5);
  await rejects(t, () => parseCheckpoint(h.zip({ 'data.pkl': w(4, [3], [1]), 'data/0': six }), 'x'),
    [/tensor w \[3\] at offset 4 with strides \[1\] reaches element 6 of storage 0, which has 6 elements/], 'offset past the storage');
  await rejects(t, () => parseCheckpoint(h.zip({ 'data.pkl': w(0, [2, 3], [4, 1]), 'data/0': six }), 'x'),
    [/reaches element 6 of storage 0/], 'strides past the storage');
  await rejects(t, () => parseCheckpoint(h.zip({ 'data.pkl': w(0, [6], [1], 8), 'data/0': six }), 'x'),
    [/storage 0 holds 24 bytes but F32\[8\] needs 32/], 'storage shorter than its declared size');
  await rejects(t, () => parseCheckpoint(h.zip({ 'data.pkl': w(0, [6], [1]) }), 'x'),
    [/storage 0 is missing from the archive \(no archive\/data\/0\)/], 'missing storage');
  await rejects(t, () => parseCheckpoint(h.zip({ 'data.pkl': w(0, [6], [1]), 'data/0': six }, { badCrc: ['data.pkl'] }), 'x'),
    [/archive\/data\.pkl fails its CRC-32 check/], 'bad CRC on the pickle');
  await rejects(t, () => parseCheckpoint(h.zip({ 'weights.bin': six }), 'x'),
    [/no <name>\/data\.pkl, so it is not a torch\.save checkpoint/], 'a zip that is not a checkpoint');
  await rejects(t, () => parseCheckpoint(h.zip({ 'data.pkl': w(0, [6], [1]), 'data/0': six, byteorder: Buffer.from('big') }), 'x'),
    [/big-endian/], 'big-endian storages');
  const legacy = Buffer.from([0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e]);
  await rejects(t, () => parseCheckpoint(legacy, 'old.pth'), [/legacy format/, /PyTorch before 1\.6/], 'pre-1.6 torch.save');

  const huge = h.stateDictPickle({ w: h.tensor({ key: '0', numel: 6 }, 0, [1 << 15, 1 << 15], [0, 0]) });
  await rejects(t, () => parseCheckpoint(h.zip({ 'data.pkl': huge, 'data/0': six }), 'x'),
    [/tensor w \[32768, 32768\] expands storage 0 of 6 elements to 1073741824/], 'an expanded view far larger than the file');
  await rejects(t, () => parseCheckpoint(h.zip({ 'data.pkl': w(0, [6], [1]), 'data/0': six }, { deflate: ['data/0'], claimSize: { 'data/0': 2 ** 31 } }), 'x'),
    [/archive\/data\/0 claims 2147483648 bytes from \d+ compressed/], 'a deflate bomb');
  const deflated = await parseCheckpoint(h.zip({ 'data.pkl': w(1, [2, 2], [1, 2]), 'data/0': six }, { deflate: ['data.pkl', 'data/0'] }), 'x');
  t.deepEqual(Array.from(deflated.tensors.get('w').data), [1, 3, 2, 4], 'deflated entries are read too');
  t.end();
});

test('fuzzed and truncated pickles and archives: a value or a WeightsError, never anything else', async (t) => {
  const good = await fs.promises.readFile(fx('deit-mini.pth'));
  const pkl = (await TorchZip.open(good, 'x')).read('data.pkl');
  t.equal(pkl[0], 0x80, 'the real data.pkl starts with PROTO');
  const persistentLoad = (pid) => pid;
  let other = 0;
  let rejected = 0;
  const tryOne = (bytes) => {
    try {
      unpickle(bytes, { source: 'fuzz', persistentLoad });
    } catch (e) {
      if (e instanceof WeightsError) rejected++;
      else if (other++ < 3) t.fail(`non-WeightsError: ${e.stack}`);
    }
  };
  for (let cut = 0; cut < pkl.length; cut++) tryOne(pkl.subarray(0, cut));
  t.equal(rejected, pkl.length, `all ${pkl.length} truncations rejected`);
  const rand = h.mulberry32(8);
  const started = Date.now();
  for (let i = 0; i < 3000; i++) {
    const b = Buffer.from(pkl);
    const n = 1 + Math.floor(rand() * 4);
    for (let k = 0; k < n; k++) b[Math.floor(rand() * b.length)] = Math.floor(rand() * 256);
    tryOne(b);
  }
  t.equal(other, 0, 'mutated pickles: only WeightsErrors');

  // Mutated pickles re-packed with valid CRCs and the real storages: exercises storage lookup,
  // range checks and view materialisation with corrupted offsets, sizes and strides.
  const zip = await TorchZip.open(good, 'x');
  const storages = {};
  for (let k = 0; zip.has(`data/${k}`); k++) storages[`data/${k}`] = zip.read(`data/${k}`);
  let loaded = 0;
  let repackOther = 0;
  for (let i = 0; i < 400; i++) {
    const b = Buffer.from(pkl);
    const n = 1 + Math.floor(rand() * 3);
    for (let k = 0; k < n; k++) b[Math.floor(rand() * b.length)] = Math.floor(rand() * 256);
    try {
      const c = await parseCheckpoint(h.zip({ 'data.pkl': b, ...storages }), 'repacked.pth');
      for (const [name, tn] of c.tensors) {
        if (tn.data.length !== tn.shape.reduce((x, y) => x * y, 1)) t.fail(`${name}: data length does not match its shape`);
      }
      loaded++;
    } catch (e) {
      if (!(e instanceof WeightsError) && repackOther++ < 3) t.fail(`repacked mutation: ${e.stack}`);
    }
  }
  t.equal(repackOther, 0, `re-packed mutated pickles: ${loaded} loaded, the rest WeightsErrors`);
  let archiveOther = 0;
  for (let i = 0; i < 300; i++) {
    const b = Buffer.from(good);
    const n = 1 + Math.floor(rand() * 3);
    for (let k = 0; k < n; k++) b[Math.floor(rand() * b.length)] = Math.floor(rand() * 256);
    try {
      await parseCheckpoint(b, 'fuzz.pth');
    } catch (e) {
      if (!(e instanceof WeightsError) && archiveOther++ < 3) t.fail(`archive mutation: ${e.stack}`);
    }
  }
  t.equal(archiveOther, 0, 'mutated archives: only WeightsErrors');
  t.ok(Date.now() - started < 60000, `finished in ${Date.now() - started} ms`);
  t.end();
});
