'use strict';
// Mutated checkpoints and tensors must parse or fail with the typed error, never anything else.
const test = require('tape');
const fs = require('node:fs');
const path = require('node:path');
const { parseSafetensors, parseNpy, serializeSafetensors, serializeNpy, WeightsError, InputError, OptionsError } = require('../dist');
const { parseCheckpoint } = require('../dist/weights/checkpoint');
const { parseModelCard } = require('../dist/weights/modelCard');
const { parseShallowJson } = require('../dist/jsonDepth');
const h = require('./helpers/torchArchive');

function mulberry32(seed) {
  return () => {
    seed |= 0;
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Flips, overwrites, inserts or cuts bytes, mostly in the header where the parser makes decisions. */
function mutate(buf, rand, headerEnd) {
  const out = Buffer.from(buf);
  const ops = 1 + Math.floor(rand() * 4);
  let b = out;
  for (let i = 0; i < ops; i++) {
    const at = Math.floor(rand() * Math.min(b.length, rand() < 0.8 ? headerEnd : b.length));
    const kind = rand();
    if (kind < 0.4) b[at] ^= 1 << Math.floor(rand() * 8);
    else if (kind < 0.7) b[at] = '0123456789[]{}",:-.eE '.charCodeAt(Math.floor(rand() * 22));
    else if (kind < 0.85) b = b.subarray(0, at);
    else b = Buffer.concat([b.subarray(0, at), Buffer.from([Math.floor(rand() * 256)]), b.subarray(at)]);
  }
  return b;
}

function small() {
  const m = new Map();
  m.set('a', { dtype: 'F32', shape: [2, 3], data: Float32Array.from([1, 2, 3, 4, 5, 6]) });
  m.set('b', { dtype: 'F16', shape: [4], data: Float32Array.from([0.5, -1, 2, 65504]) });
  m.set('c', { dtype: 'BF16', shape: [1, 2], data: Float32Array.from([3, -7]) });
  return serializeSafetensors(m);
}

/**
 * Feeds `count` mutations of the seeds to `parse`; each must return tensors whose data length
 * matches their shape, or throw `ErrorClass` with `code`. Returns the tallies.
 */
function fuzz(t, { seeds, headerEnd, parse, ErrorClass, code, seed, count = 1500 }) {
  const rand = mulberry32(seed);
  const tally = { parsed: 0, rejected: 0, other: 0 };
  for (let i = 0; i < count; i++) {
    const from = seeds[i % seeds.length];
    const buf = mutate(from, rand, headerEnd(from));
    try {
      for (const { data, shape } of parse(buf)) {
        if (data.length !== shape.reduce((a, b) => a * b, 1)) throw new Error(`${data.length} values for shape [${shape}]`);
      }
      tally.parsed++;
    } catch (err) {
      if (err instanceof ErrorClass && err.code === code) {
        tally.rejected++;
      } else {
        tally.other++;
        if (tally.other <= 3) t.fail(`mutation ${i}: ${err && err.stack}`);
      }
    }
  }
  const { parsed, rejected, other } = tally;
  t.equal(other, 0, `${parsed} parsed with consistent shapes, ${rejected} rejected with ${ErrorClass.name}, ${other} other errors`);
  t.ok(rejected > count / 3, 'most mutations are caught');
}

test('mutated safetensors files parse consistently or throw WeightsError', (t) => {
  fuzz(t, {
    seeds: [small(), fs.readFileSync(path.join(__dirname, 'fixtures', 'tiny-evit.safetensors'))],
    headerEnd: (b) => 8 + Number(b.readBigUInt64LE(0)),
    parse: (b) => parseSafetensors(b).tensors.values(),
    ErrorClass: WeightsError,
    code: 'EVIT_BAD_WEIGHTS',
    seed: 2024,
  });
  t.end();
});

test('mutated .npy files parse consistently or throw InputError', (t) => {
  fuzz(t, {
    seeds: [serializeNpy(Float32Array.from({ length: 24 }, (_, i) => i / 7), [2, 3, 4])],
    headerEnd: (b) => 10 + b.readUInt16LE(8),
    parse: (b) => [parseNpy(b)],
    ErrorClass: InputError,
    code: 'EVIT_BAD_INPUT',
    seed: 7,
  });
  t.end();
});

/** Like fuzz(), for async parsers of whole checkpoints; `expected(err)` says whether an error is a typed refusal. */
async function fuzzAsync(t, { seeds, mutateOne, parse, expected, seed, count }) {
  const rand = mulberry32(seed);
  const tally = { parsed: 0, rejected: 0, other: 0 };
  for (let i = 0; i < count; i++) {
    const buf = mutateOne(seeds[i % seeds.length], rand);
    try {
      for (const { data, shape } of await parse(buf)) {
        if (data.length !== shape.reduce((a, b) => a * b, 1)) throw new Error(`${data.length} values for shape [${shape}]`);
      }
      tally.parsed++;
    } catch (err) {
      if (expected(err)) {
        tally.rejected++;
      } else {
        tally.other++;
        if (tally.other <= 3) t.fail(`mutation ${i}: ${err && err.stack}`);
      }
    }
  }
  const { parsed, rejected, other } = tally;
  t.equal(other, 0, `${parsed} parsed with consistent shapes, ${rejected} rejected with a typed error, ${other} other errors`);
  return tally;
}

const typedRefusal = (err) => (err instanceof WeightsError && err.code === 'EVIT_BAD_WEIGHTS') ||
  (err instanceof OptionsError && err.code === 'EVIT_BAD_OPTIONS');

/** A torch.save-shaped archive of a few tensors, as pickle bytes and storages to mutate separately. */
function pthParts() {
  const tensors = {
    'a.weight': h.tensor({ key: '0', numel: 6 }, 0, [2, 3], [3, 1]),
    'a.bias': h.tensor({ key: '1', numel: 2 }, 0, [2], [1]),
    'b.view': h.tensor({ key: '0', numel: 6 }, 1, [2, 2], [1, 3]),
    'c.half': h.tensor({ key: '2', type: 'HalfStorage', numel: 4 }, 0, [4], [1]),
  };
  return {
    pickle: h.stateDictPickle(tensors),
    storages: { 'data/0': h.f32(1, 2, 3, 4, 5, 6), 'data/1': h.f32(-1, 1), 'data/2': Buffer.from([0, 60, 0, 188, 0, 64, 255, 123]) },
  };
}

test('mutated pickles inside well-formed archives parse consistently or throw a typed error', async (t) => {
  const { pickle, storages } = pthParts();
  const tally = await fuzzAsync(t, {
    seeds: [pickle],
    // Every byte of a pickle is a decision; rezip so that the CRC never hides the unpickler.
    mutateOne: (p, rand) => h.zip({ 'data.pkl': mutate(p, rand, p.length), ...storages }),
    parse: async (b) => (await parseCheckpoint(b, 'fuzz.pth')).tensors.values(),
    expected: typedRefusal,
    seed: 99,
    count: 3000,
  });
  t.ok(tally.rejected > 1000, 'most mutations are caught');
});

test('mutated .pth archives (zip headers, directory, storages) parse consistently or throw WeightsError', async (t) => {
  const { pickle, storages } = pthParts();
  const seeds = [
    h.zip({ 'data.pkl': pickle, ...storages }),
    h.zip({ 'data.pkl': pickle, ...storages }, { deflate: ['data/0', 'data.pkl'] }),
    fs.readFileSync(path.join(__dirname, 'fixtures', 'pth', 'deit-mini.pth')),
  ];
  await fuzzAsync(t, {
    seeds,
    // Mostly the local headers and the central directory at the end, where the reader decides.
    mutateOne: (b, rand) => {
      const out = mutate(b, rand, b.length);
      if (rand() < 0.5) return out;
      const tail = Math.max(0, b.length - 400);
      const head = Buffer.from(b.subarray(0, tail));
      return Buffer.concat([head, mutate(b.subarray(tail), rand, 400)]);
    },
    parse: async (b) => (await parseCheckpoint(b, 'fuzz.pth')).tensors.values(),
    expected: typedRefusal,
    seed: 4242,
    count: 2000,
  });
  t.end();
});

test('mutated model cards parse or throw WeightsError', (t) => {
  const card = fs.readFileSync(path.join(__dirname, '..', 'models', 'fashion-mnist', 'config.json'));
  const rand = mulberry32(77);
  let rejected = 0, other = 0;
  for (let i = 0; i < 3000; i++) {
    const text = mutate(card, rand, card.length).toString('utf8');
    try {
      parseModelCard(parseShallowJson(text, 8, (m) => new WeightsError(`card: ${m}`)), 'card.json');
    } catch (err) {
      if (err instanceof WeightsError) rejected++;
      else if (++other <= 3) t.fail(`mutation ${i}: ${err && err.stack}`);
    }
  }
  t.equal(other, 0, `${3000 - rejected} parsed, ${rejected} rejected with WeightsError, ${other} other errors`);
  t.end();
});
