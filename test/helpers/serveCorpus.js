'use strict';
// Requests to the HTTP server and what they must be answered with, for the fuzz test and the soak.
// `seedRequests` makes a valid request of every body kind the server reads. `referenceAnswer`
// reads a request the way docs/SERVING.md describes it, independently of the server's code, and
// computes its answer with the library (Model.classify / Model.forward); `checkResponse` compares a
// 200 with it. A request the reference reading refuses must not get a 200.
const sharp = require('sharp');
const evit = require('../../dist');
const { mulberry32 } = require('./reference');

const IMAGE_TYPES = ['image/jpeg', 'image/png', 'image/webp'];
const NPY = 'application/x-npy';
const ATOL = 1e-4;
const MAX_JSON_DEPTH = 16;

class Refused extends Error {}
const refuse = (why) => { throw new Refused(why); };

/** A plain decimal option (number or decimal string); undefined for absent, null or ''. */
function decimal(name, v) {
  if (v === undefined || v === null || v === '') return undefined;
  if (typeof v === 'number') return Number.isFinite(v) ? v : refuse(`${name} is not finite`);
  if (typeof v !== 'string') refuse(`${name} is a ${typeof v}`);
  const t = v.trim();
  if (!/^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$/.test(t)) refuse(`${name} ${JSON.stringify(v)} is not a decimal`);
  const n = Number(t);
  return Number.isFinite(n) ? n : refuse(`${name} overflows`);
}

function positive(name, v) {
  if (v === undefined) return undefined;
  return Number.isSafeInteger(v) && v >= 1 ? v : refuse(`${name} ${v} is not a positive integer`);
}

function base64(v) {
  if (typeof v !== 'string') refuse('base64 field is not a string');
  const text = v.replace(/^data:[\w.+/-]+;base64,/, '').replace(/\s+/g, '');
  if (text.length === 0 || text.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(text)) refuse('not base64');
  return Buffer.from(text, 'base64');
}

function depth(text) {
  let d = 0, most = 0, str = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (str) { if (c === '\\') i++; else if (c === '"') str = false; }
    else if (c === '"') str = true;
    else if (c === '{' || c === '[') most = Math.max(most, ++d);
    else if (c === '}' || c === ']') d--;
  }
  return most;
}

function parseJson(text) {
  if (depth(text) > MAX_JSON_DEPTH) refuse('nested too deep');
  try {
    return JSON.parse(text);
  } catch {
    return refuse('not JSON');
  }
}

const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
const flatten = (a, out = []) => { for (const v of a) { if (Array.isArray(v)) flatten(v, out); else out.push(v); } return out; };

/** Logits [B][classes] of `model` for a tensor or images, at `keepRate`; refuses what the library refuses. */
async function expectedLogits(model, input, keepRate) {
  try {
    if (keepRate !== undefined) model.scheduleFor({ keepRate });
    let rows;
    let served;
    if (input.tensor) {
      const out = await model.forward(input.tensor, { keepRate });
      const k = out.shape[1];
      rows = Array.from({ length: out.shape[0] }, (_, i) => Array.from(out.logits.subarray(i * k, (i + 1) * k)));
      served = out.schedule.keepRate;
    } else {
      const res = await model.classify(input.images, { keepRate, top: 1 });
      rows = res.map((r) => r.logits);
      served = keepRate ?? model.schedule.keepRate;
    }
    if (rows.some((r) => r.some((v) => !Number.isFinite(v)))) refuse('the logits are not finite');
    return { rows, keepRate: served };
  } catch (err) {
    if (err instanceof Refused) throw err;
    return refuse(`the library refuses it: ${err.code ?? err.name}: ${err.message}`);
  }
}

function npyTensor(buf, model) {
  let t;
  try {
    t = evit.parseNpy(buf);
  } catch (err) {
    return refuse(`.npy: ${err.message}`);
  }
  const shape = t.shape.length === 3 ? [1, ...t.shape] : t.shape;
  return { data: t.data, shape };
}

/** What a /v1/classify request means: { input, top, keepRate, kept }, or a Refused error. */
function readV1(req, model) {
  const url = new URL(req.path, 'http://x');
  const q = url.searchParams;
  const one = (k) => { const all = q.getAll(k); return all.length > 1 ? refuse(`${k} given twice`) : all[0]; };
  const type = (req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
  const kept = ['1', 'true'].includes(q.getAll('kept').length === 1 ? q.get('kept') : '');
  if (IMAGE_TYPES.includes(type) || type === NPY) {
    if (req.body.length === 0) refuse('empty body');
    const top = positive('top', decimal('top', one('top')));
    const keepRate = decimal('keepRate', one('keepRate'));
    const input = type === NPY ? { tensor: npyTensor(req.body, model) } : { images: [req.body] };
    return { input, top, keepRate, kept };
  }
  if (type !== 'application/json') refuse(`content type ${type}`);
  // fastify's JSON parser drops a byte-order mark.
  const text = req.body.toString('utf8').replace(/^\uFEFF/, '');
  // fastify's parser (secure-json-parse) refuses __proto__ keys and constructor.prototype.
  if (/"__proto__"\s*:/.test(text) || (/"constructor"\s*:/.test(text) && /"prototype"\s*:/.test(text))) refuse('prototype keys');
  const o = parseJson(text);
  if (!isObject(o)) refuse('not an object');
  const has = ['image', 'npy'].filter((k) => o[k] !== undefined);
  if (has.length !== 1) refuse('not exactly one of image, npy');
  const top = positive('top', decimal('top', o.top));
  const keepRate = decimal('keepRate', o.keepRate);
  const input = has[0] === 'image' ? { images: [base64(o.image)] } : { tensor: npyTensor(base64(o.npy), model) };
  return { input, top, keepRate, kept: kept || o.kept === true };
}

/** What a v2 infer request means: { input, keepRate, outputs, binaryOutput, id }, or a Refused error. */
function readV2(req, model) {
  const h = req.headers['inference-header-content-length'];
  let json = req.body;
  let binary = Buffer.alloc(0);
  if (h !== undefined) {
    if (!/^\d+$/.test(String(h).trim())) refuse('header length is not a number');
    const n = Number(h);
    if (n < 1 || n > req.body.length) refuse('header length out of range');
    json = req.body.subarray(0, n);
    binary = req.body.subarray(n);
  }
  if (json.length === 0) refuse('empty');
  const o = parseJson(json.toString('utf8'));
  if (!isObject(o)) refuse('not an object');
  if (o.id !== undefined && typeof o.id !== 'string') refuse('id');
  const params = o.parameters === undefined ? {} : isObject(o.parameters) ? o.parameters : refuse('parameters');
  const keepRate = decimal('keep_rate', params.keep_rate);
  if (!Array.isArray(o.inputs) || o.inputs.length !== 1) refuse('inputs');
  const inp = o.inputs[0];
  if (!isObject(inp) || typeof inp.name !== 'string') refuse('input');
  const { shape, datatype, data } = inp;
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) refuse('shape');
  const p = inp.parameters === undefined ? {} : isObject(inp.parameters) ? inp.parameters : refuse('input parameters');
  let raw = null;
  if (p.binary_data_size !== undefined) {
    const size = p.binary_data_size;
    if (!Number.isSafeInteger(size) || size < 0 || size > binary.length) refuse('binary_data_size');
    if (data !== undefined) refuse('data and binary');
    raw = binary.subarray(0, size);
    if (size !== binary.length) refuse('binary data left over');
  } else if (binary.length) {
    refuse('binary data left over');
  }
  const { inChans, numClasses } = model.architecture;
  let input;
  if (inp.name === 'input') {
    if (datatype !== 'FP32') refuse('datatype');
    if (shape.length !== 4 || shape[0] < 1 || shape[1] !== inChans || shape[2] !== model.imgSize || shape[3] !== model.imgSize) refuse('tensor shape');
    const n = shape.reduce((a, b) => a * b, 1);
    const values = new Float32Array(n);
    if (raw) {
      if (raw.length !== n * 4) refuse('binary size');
      for (let i = 0; i < n; i++) values[i] = raw.readFloatLE(4 * i);
    } else {
      if (!Array.isArray(data)) refuse('data');
      const flat = flatten(data);
      if (flat.length !== n || !flat.every((v) => typeof v === 'number')) refuse('data values');
      flat.forEach((v, i) => { values[i] = v; });
    }
    input = { tensor: { data: values, shape } };
  } else if (inp.name === 'image') {
    if (datatype !== 'BYTES') refuse('datatype');
    if (!(shape.length === 1 || (shape.length === 2 && shape[1] === 1)) || shape[0] < 1) refuse('image shape');
    let images = [];
    if (raw) {
      for (let at = 0; at < raw.length;) {
        if (at + 4 > raw.length) refuse('element length');
        const len = raw.readUInt32LE(at);
        at += 4;
        if (at + len > raw.length) refuse('element');
        images.push(raw.subarray(at, at + len));
        at += len;
      }
    } else {
      if (!Array.isArray(data)) refuse('data');
      images = flatten(data).map(base64);
    }
    if (images.length !== shape[0] || images.some((b) => b.length === 0)) refuse('image count');
    input = { images };
  } else {
    refuse('input name');
  }
  let outputs;
  if (o.outputs === undefined) {
    outputs = [{ name: 'logits' }, { name: 'probabilities' }];
  } else {
    if (!Array.isArray(o.outputs) || o.outputs.length === 0) refuse('outputs');
    const seen = new Set();
    outputs = o.outputs.map((x) => {
      if (!isObject(x) || !['logits', 'probabilities'].includes(x.name) || seen.has(x.name)) refuse('output');
      seen.add(x.name);
      const op = x.parameters === undefined ? {} : isObject(x.parameters) ? x.parameters : refuse('output parameters');
      if (op.binary_data !== undefined && typeof op.binary_data !== 'boolean') refuse('binary_data');
      let classification;
      if (op.classification !== undefined) classification = Math.min(positive('classification', op.classification) ?? refuse('classification'), numClasses);
      return { name: x.name, binary: op.binary_data, classification };
    });
  }
  if (params.binary_data_output !== undefined && typeof params.binary_data_output !== 'boolean') refuse('binary_data_output');
  return { input, keepRate, outputs, binaryOutput: params.binary_data_output === true, id: o.id };
}

/**
 * The answer a request must get: { refused: reason } when the reference reading refuses it, else
 * { route, meaning, logits, keepRate } to check a 200 against.
 */
async function referenceAnswer(model, req) {
  try {
    const meaning = req.route === 'v1' ? readV1(req, model) : readV2(req, model);
    const { rows, keepRate } = await expectedLogits(model, meaning.input, meaning.keepRate);
    return { route: req.route, meaning, logits: rows, keepRate };
  } catch (err) {
    if (err instanceof Refused) return { refused: err.message };
    throw err;
  }
}

const close = (a, b) => Array.isArray(a) && a.length === b.length && a.every((v, i) => typeof v === 'number' && Math.abs(v - b[i]) <= ATOL);
const softmax = (row) => { const m = Math.max(...row); const e = row.map((v) => Math.exp(v - m)); const s = e.reduce((x, y) => x + y, 0); return e.map((v) => v / s); };

/** Why a 200 response is not the reference answer, or null when it is. */
function checkResponse(expected, res) {
  if (expected.refused) return `200 for a request the reference reading refuses (${expected.refused})`;
  const B = expected.logits.length;
  if (expected.route === 'v1') {
    const b = res.json;
    if (!b || !Array.isArray(b.results) || b.results.length !== B) return `results: ${JSON.stringify(b)?.slice(0, 200)}`;
    if (b.keepRate !== expected.keepRate) return `keepRate ${b.keepRate}, expected ${expected.keepRate}`;
    const k = Math.min(expected.meaning.top ?? 5, expected.logits[0].length);
    for (let i = 0; i < B; i++) {
      const r = b.results[i];
      const want = expected.logits[i];
      if (!close(r.logits, want)) return `image ${i}: logits differ`;
      if (r.top.length !== k) return `image ${i}: ${r.top.length} top classes, expected ${k}`;
      const order = want.map((_, j) => j).sort((x, y) => want[y] - want[x] || x - y);
      if (!r.top.every((c, j) => Math.abs(want[c.index] - want[order[j]]) <= ATOL)) return `image ${i}: top classes out of order`;
      if (expected.meaning.kept !== Array.isArray(r.kept)) return `image ${i}: kept ${expected.meaning.kept ? 'missing' : 'not asked for'}`;
    }
    return null;
  }
  const m = expected.meaning;
  const json = res.json;
  if (!json || !Array.isArray(json.outputs) || json.outputs.length !== m.outputs.length) return `outputs: ${JSON.stringify(json)?.slice(0, 200)}`;
  if (json.parameters?.keep_rate !== (expected.keepRate ?? 'counts')) return `keep_rate ${json.parameters?.keep_rate}, expected ${expected.keepRate}`;
  if (m.id !== undefined && json.id !== m.id) return 'id not echoed';
  let at = res.headerLength ?? res.raw.length;
  for (let j = 0; j < m.outputs.length; j++) {
    const want = m.outputs[j];
    const got = json.outputs[j];
    if (got.name !== want.name) return `output ${j} is ${got.name}, expected ${want.name}`;
    const rows = want.name === 'logits' ? expected.logits : expected.logits.map(softmax);
    let values;
    const binary = want.binary ?? m.binaryOutput;
    if (binary) {
      const size = got.parameters?.binary_data_size;
      if (!Number.isSafeInteger(size)) return `output ${want.name}: no binary_data_size`;
      const bytes = res.raw.subarray(at, at + size);
      at += size;
      if (want.classification !== undefined) {
        values = [];
        for (let p = 0; p < bytes.length;) { const n = bytes.readUInt32LE(p); values.push(bytes.subarray(p + 4, p + 4 + n).toString()); p += 4 + n; }
      } else {
        values = Array.from({ length: bytes.length / 4 }, (_, i) => bytes.readFloatLE(4 * i));
      }
    } else {
      values = got.data;
    }
    if (want.classification !== undefined) {
      const k = want.classification;
      if (got.datatype !== 'BYTES' || got.shape?.join() !== `${B},${k}` || values?.length !== B * k) return `output ${want.name}: classification shape`;
      for (let i = 0; i < B; i++) {
        const row = rows[i];
        const order = row.map((_, c) => c).sort((x, y) => row[y] - row[x] || x - y);
        for (let r = 0; r < k; r++) {
          const [v, idx] = String(values[i * k + r]).split(':');
          if (Math.abs(row[Number(idx)] - row[order[r]]) > ATOL || Math.abs(Number(v) - row[Number(idx)]) > ATOL) return `output ${want.name}: classification ${values[i * k + r]}`;
        }
      }
    } else {
      if (got.datatype !== 'FP32' || got.shape?.join() !== `${B},${rows[0].length}`) return `output ${want.name}: shape ${got.shape}`;
      if (!close(values, rows.flat())) return `output ${want.name}: values differ`;
    }
  }
  return null;
}

/** Is `body` the route's JSON error: v1 {"error": {code, message}}, v2 {"error": message, "code"}? */
function isErrorBody(route, body) {
  if (route === 'v1') return typeof body?.error?.code === 'string' && /^EVIT_[A-Z_]+$/.test(body.error.code) && typeof body.error.message === 'string' && body.error.message.length > 0;
  return typeof body?.error === 'string' && body.error.length > 0 && /^EVIT_[A-Z_]+$/.test(body.code ?? '');
}

function patternPng(w, h, seed) {
  const rand = mulberry32(seed);
  const raw = Buffer.alloc(w * h * 3);
  for (let i = 0; i < raw.length; i++) raw[i] = Math.floor(rand() * 256);
  return sharp(raw, { raw: { width: w, height: h, channels: 3 } }).png().toBuffer();
}

/** A valid request of every body kind the server reads, for `model` served as `modelName`. */
async function seedRequests(model, modelName, seed = 1) {
  const rand = mulberry32(seed);
  const { inChans } = model.architecture;
  const size = model.imgSize;
  const per = inChans * size * size;
  const png = await patternPng(40, 32, seed);
  const jpeg = await sharp(png).jpeg({ quality: 80 }).toBuffer();
  const webp = await sharp(png).webp().toBuffer();
  const floats = Float32Array.from({ length: per }, () => rand() * 4 - 2);
  const npy = evit.serializeNpy(floats, [1, inChans, size, size]);
  const npy2 = evit.serializeNpy(Float32Array.from({ length: 2 * per }, () => rand() * 4 - 2), [2, inChans, size, size]);
  const v1 = (type, body, query = '') => ({ route: 'v1', kind: `v1 ${type}${query ? ' ' + query : ''}`, path: `/v1/classify${query}`, headers: { 'content-type': type }, body });
  const infer = `/v2/models/${modelName}/infer`;
  const v2 = (kind, json, binary = null) => {
    const head = Buffer.from(JSON.stringify(json));
    return binary
      ? { route: 'v2', kind, path: infer, headers: { 'content-type': 'application/octet-stream', 'inference-header-content-length': String(head.length) }, body: Buffer.concat([head, binary]) }
      : { route: 'v2', kind, path: infer, headers: { 'content-type': 'application/json' }, body: head };
  };
  const nested = [Array.from({ length: inChans }, (_, c) => Array.from({ length: size }, (_, y) => Array.from(floats.subarray(c * size * size + y * size, c * size * size + (y + 1) * size))))];
  const lenPrefixed = (bufs) => Buffer.concat(bufs.flatMap((b) => { const l = Buffer.alloc(4); l.writeUInt32LE(b.length); return [l, b]; }));
  const fp32 = Buffer.from(floats.buffer.slice(0));
  return [
    v1('image/png', png),
    v1('image/jpeg', jpeg, '?top=3'),
    v1('image/webp', webp, '?keepRate=0.5&kept=1'),
    v1(NPY, npy, '?keepRate=0.7'),
    v1(NPY, npy2, '?top=2'),
    v1('application/json', Buffer.from(JSON.stringify({ image: png.toString('base64'), top: 3 }))),
    v1('application/json', Buffer.from(JSON.stringify({ image: `data:image/jpeg;base64,${jpeg.toString('base64')}`, keepRate: 0.5, kept: true }))),
    v1('application/json', Buffer.from(JSON.stringify({ npy: npy.toString('base64'), keepRate: '0.9' }))),
    v2('v2 FP32 JSON flat', { id: 'a1', inputs: [{ name: 'input', shape: [1, inChans, size, size], datatype: 'FP32', data: Array.from(floats) }] }),
    v2('v2 FP32 JSON nested', { parameters: { keep_rate: 0.5 }, inputs: [{ name: 'input', shape: [1, inChans, size, size], datatype: 'FP32', data: nested }], outputs: [{ name: 'probabilities' }] }),
    v2('v2 BYTES JSON', { inputs: [{ name: 'image', shape: [2], datatype: 'BYTES', data: [png.toString('base64'), webp.toString('base64')] }], outputs: [{ name: 'logits', parameters: { classification: 3 } }] }),
    v2('v2 FP32 binary', { inputs: [{ name: 'input', shape: [1, inChans, size, size], datatype: 'FP32', parameters: { binary_data_size: fp32.length } }], parameters: { binary_data_output: true } }, fp32),
    v2('v2 BYTES binary', { inputs: [{ name: 'image', shape: [2, 1], datatype: 'BYTES', parameters: { binary_data_size: 8 + png.length + jpeg.length } }], outputs: [{ name: 'probabilities', parameters: { binary_data: true, classification: 2 } }, { name: 'logits' }] }, lenPrefixed([png, jpeg])),
  ];
}

/** Parses a response body the way a client would: JSON, or a v2 binary response's JSON header and its bytes. */
function readResponse(status, headers, raw) {
  const res = { status, headers, raw, json: null, headerLength: undefined };
  const n = headers['inference-header-content-length'];
  try {
    if (n !== undefined) {
      res.headerLength = Number(n);
      res.json = JSON.parse(raw.subarray(0, res.headerLength).toString('utf8'));
    } else if (/json/.test(headers['content-type'] ?? '')) {
      res.json = JSON.parse(raw.toString('utf8'));
    }
  } catch {
    res.json = undefined;
  }
  return res;
}

module.exports = { seedRequests, referenceAnswer, checkResponse, isErrorBody, readResponse, IMAGE_TYPES, NPY };
