'use strict';
// The Open Inference Protocol v2 routes of the server (KServe / Triton HTTP API), over loopback:
// health and metadata in the protocol's JSON shapes, FP32 and BYTES inputs as JSON and as Triton's
// binary tensor data, the classification extension, readiness while loading and while draining, and
// every bad request answered {"error": message} with its code.
const test = require('tape');
const sharp = require('sharp');
const evit = require('../dist');
const { tinyModel, tinyOptions } = require('./helpers/fixtures');
const { mulberry32, uniform } = require('./helpers/reference');
const { noisePng, pngClaiming, request, until, metric } = require('./helpers/serve');

const { loadModel, createServer, Batcher } = evit;
const ATOL = 1e-4; // SPEC §4
const LABELS = ['zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine'];

let model;
test('setup', async (t) => {
  model = await loadModel(tinyModel, { ...tinyOptions, labels: LABELS });
  t.ok(model, 'tiny fixture loaded with labels');
});

async function start(options = {}) {
  const app = createServer({ model, ...options });
  const base = await app.listen({ host: '127.0.0.1', port: 0 });
  return { app, base };
}

const getJson = (base, path) => request(base, { method: 'GET', path });
const infer = (base, body, { name = 'evit', headers = {} } = {}) =>
  request(base, { path: `/v2/models/${name}/infer`, headers: { 'content-type': 'application/json', ...headers }, body: typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body) });

/** A request with binary tensors after the JSON header, as Triton's clients send it. */
function binaryRequest(json, chunks) {
  const header = Buffer.from(JSON.stringify(json));
  return { body: Buffer.concat([header, ...chunks]), headers: { 'content-type': 'application/octet-stream', 'inference-header-content-length': String(header.length) } };
}

/** Splits a binary response into its JSON header and each output's bytes. */
function readBinaryResponse(r) {
  const n = Number(r.headers['inference-header-content-length']);
  const raw = Buffer.from(r.text, 'latin1');
  const json = JSON.parse(raw.subarray(0, n).toString('utf8'));
  let at = n;
  const data = {};
  for (const o of json.outputs) {
    const size = o.parameters?.binary_data_size;
    if (size === undefined) continue;
    data[o.name] = raw.subarray(at, at + size);
    at += size;
  }
  return { json, data, rest: raw.length - at };
}

function bytesElements(buf) {
  const out = [];
  for (let at = 0; at < buf.length;) {
    const len = buf.readUInt32LE(at);
    out.push(buf.subarray(at + 4, at + 4 + len).toString('utf8'));
    at += 4 + len;
  }
  return out;
}

const closeTo = (a, b) => a.length === b.length && a.every((v, i) => Math.abs(v - b[i]) <= ATOL);
const softmax = (row) => {
  const m = Math.max(...row);
  const e = row.map((v) => Math.exp(v - m));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / s);
};

/** Binary requests and responses are not UTF-8: this client keeps the bytes. */
function requestRaw(base, { path, headers, body }) {
  const http = require('node:http');
  return new Promise((resolve, reject) => {
    const req = http.request(new URL(path, base), { method: 'POST', headers, agent: false }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const buf = Buffer.concat(chunks);
        const text = buf.toString('latin1');
        const json = /json/.test(res.headers['content-type'] ?? '') ? JSON.parse(buf.toString('utf8')) : null;
        resolve({ status: res.statusCode, headers: res.headers, body: json, text });
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

test('server metadata, health and model metadata in the protocol\'s shapes', async (t) => {
  const { app, base } = await start({ modelName: 'tiny-evit' });
  const meta = await getJson(base, '/v2');
  t.deepEqual(meta.body, { name: 'evit', version: require('../package.json').version, extensions: ['binary_tensor_data', 'classification'] }, 'GET /v2');
  const live = await getJson(base, '/v2/health/live');
  t.deepEqual([live.status, live.body], [200, { live: true }], 'live: 200 {"live": true}');
  const ready = await getJson(base, '/v2/health/ready');
  t.deepEqual([ready.status, ready.body], [200, { ready: true }], 'ready: 200 {"ready": true}');
  const want = {
    name: 'tiny-evit',
    versions: ['1'],
    platform: 'evit',
    inputs: [{ name: 'input', datatype: 'FP32', shape: [-1, 3, 224, 224] }, { name: 'image', datatype: 'BYTES', shape: [-1] }],
    outputs: [{ name: 'logits', datatype: 'FP32', shape: [-1, 10] }, { name: 'probabilities', datatype: 'FP32', shape: [-1, 10] }],
  };
  t.deepEqual((await getJson(base, '/v2/models/tiny-evit')).body, want, 'model metadata');
  t.deepEqual((await getJson(base, '/v2/models/tiny-evit/versions/1')).body, want, 'model metadata of version 1');
  const mready = await getJson(base, '/v2/models/tiny-evit/ready');
  t.deepEqual([mready.status, mready.body], [200, { name: 'tiny-evit', ready: true }], 'model ready');
  for (const path of ['/v2/models/resnet50', '/v2/models/tiny-evit/versions/2', '/v2/models/resnet50/ready']) {
    const r = await getJson(base, path);
    t.ok(r.status === 404 && typeof r.body.error === 'string' && r.body.code === 'EVIT_NOT_FOUND', `${path}: 404 {"error": "${r.body.error}"}`);
  }
  await app.close();
});

test('FP32 input as JSON: logits and probabilities of forward(), nested or flat, with the request id and keep rate', async (t) => {
  const { app, base } = await start();
  const rand = mulberry32(17);
  const data = uniform(rand, 2 * 3 * 224 * 224, -2, 2);
  const shape = [2, 3, 224, 224];
  const want = await model.forward({ data, shape });
  const rows = [Array.from(want.logits.subarray(0, 10)), Array.from(want.logits.subarray(10, 20))];
  const flat = { id: 'req-42', inputs: [{ name: 'input', shape, datatype: 'FP32', data: Array.from(data) }] };
  const r = await infer(base, flat);
  t.equal(r.status, 200, 'flat FP32 data: 200');
  t.equal(r.body.model_name, 'evit', 'model_name');
  t.equal(r.body.model_version, '1', 'model_version');
  t.equal(r.body.id, 'req-42', 'the request id comes back');
  t.equal(r.body.parameters.keep_rate, 0.7, 'parameters.keep_rate names the keep rate that served it');
  t.ok(r.body.parameters.batch_size >= 2, `parameters.batch_size ${r.body.parameters.batch_size}`);
  const [logits, probs] = r.body.outputs;
  t.deepEqual([logits.name, logits.datatype, logits.shape], ['logits', 'FP32', [2, 10]], 'logits: FP32 [2, 10]');
  t.ok(closeTo(logits.data, [...rows[0], ...rows[1]]), 'logits equal forward()');
  t.deepEqual([probs.name, probs.datatype, probs.shape], ['probabilities', 'FP32', [2, 10]], 'probabilities: FP32 [2, 10]');
  t.ok(closeTo(probs.data, [...softmax(rows[0]), ...softmax(rows[1])]), 'probabilities are the softmax of the logits');

  // The same tensor nested in its own dimensions.
  const nested = [0, 1].map((b) => [0, 1, 2].map((c) => Array.from({ length: 224 }, (_, y) => Array.from(data.subarray(((b * 3 + c) * 224 + y) * 224, ((b * 3 + c) * 224 + y + 1) * 224)))));
  const rn = await infer(base, { inputs: [{ name: 'input', shape, datatype: 'FP32', data: nested }], outputs: [{ name: 'logits' }] });
  t.equal(rn.status, 200, 'nested FP32 data: 200');
  t.deepEqual(rn.body.outputs.map((o) => o.name), ['logits'], 'only the output asked for');
  t.ok(closeTo(rn.body.outputs[0].data, logits.data), 'nested data gives the same logits');
  t.notOk('id' in rn.body, 'no id when the request had none');

  const at5 = await model.forward({ data: data.subarray(0, 3 * 224 * 224), shape: [1, 3, 224, 224] }, { keepRate: 0.5 });
  const r5 = await infer(base, { parameters: { keep_rate: 0.5 }, inputs: [{ name: 'input', shape: [1, 3, 224, 224], datatype: 'FP32', data: Array.from(data.subarray(0, 3 * 224 * 224)) }] });
  t.equal(r5.body.parameters.keep_rate, 0.5, 'parameters.keep_rate 0.5 is honoured');
  t.equal(r5.headers['x-evit-keep-rate'], '0.5', 'and named in x-evit-keep-rate');
  t.ok(closeTo(r5.body.outputs[0].data, Array.from(at5.logits)), 'logits of forward() at keep rate 0.5');
  await app.close();
});

test('BYTES input: base64 images in JSON, classified as /v1/classify would; the classification extension', async (t) => {
  const { app, base } = await start();
  const pngs = await Promise.all([3, 4, 5].map((s) => noisePng(s)));
  const alone = await Promise.all(pngs.map(async (p) => (await model.classify(p, { top: 3 }))[0]));
  const r = await infer(base, {
    inputs: [{ name: 'image', shape: [3], datatype: 'BYTES', data: pngs.map((p) => p.toString('base64')) }],
    outputs: [{ name: 'logits' }, { name: 'probabilities', parameters: { classification: 3 } }],
  });
  t.equal(r.status, 200, 'three base64 PNGs: 200');
  t.ok(closeTo(r.body.outputs[0].data, alone.flatMap((a) => a.logits)), 'each image\'s logits, in order');
  const cls = r.body.outputs[1];
  t.deepEqual([cls.datatype, cls.shape], ['BYTES', [3, 3]], 'classification: BYTES [batch, 3]');
  const parsed = cls.data.map((s) => s.split(':'));
  t.deepEqual(parsed.map((p) => Number(p[1])), alone.flatMap((a) => a.top.map((x) => x.index)), 'top-3 indices, best first, per image');
  t.deepEqual(parsed.map((p) => p[2]), alone.flatMap((a) => a.top.map((x) => LABELS[x.index])), 'with the model\'s labels');
  t.ok(parsed.every((p, i) => Math.abs(Number(p[0]) - alone.flatMap((a) => a.top.map((x) => x.prob))[i]) < 1e-6), '"value" is the probability');
  const nested = await infer(base, { inputs: [{ name: 'image', shape: [1, 1], datatype: 'BYTES', data: [[pngs[0].toString('base64')]] }], outputs: [{ name: 'logits', parameters: { classification: 1 } }] });
  const top1 = nested.body.outputs[0].data[0].split(':');
  t.ok(nested.status === 200 && Number(top1[1]) === alone[0].top[0].index && Math.abs(Number(top1[0]) - alone[0].logits[alone[0].top[0].index]) < 1e-6,
    `shape [1, 1], top-1 of the logits: ${nested.body.outputs[0].data[0]}`);
  await app.close();
});

test('binary tensor data: FP32 and BYTES inputs after the JSON header, binary outputs back', async (t) => {
  const { app, base } = await start();
  const rand = mulberry32(23);
  const data = uniform(rand, 3 * 224 * 224, -2, 2);
  const want = await model.forward({ data, shape: [1, 3, 224, 224] });
  const raw = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const req = binaryRequest({
    inputs: [{ name: 'input', shape: [1, 3, 224, 224], datatype: 'FP32', parameters: { binary_data_size: raw.length } }],
    outputs: [{ name: 'logits', parameters: { binary_data: true } }, { name: 'probabilities' }],
  }, [raw]);
  const r = await requestRaw(base, { path: '/v2/models/evit/infer', ...req });
  t.equal(r.status, 200, 'binary FP32 input: 200');
  t.equal(r.headers['content-type'], 'application/octet-stream', 'a binary output makes a binary response');
  const { json, data: out, rest } = readBinaryResponse(r);
  t.equal(rest, 0, 'the body is the JSON header and the binary outputs, nothing else');
  t.deepEqual(json.outputs[0], { name: 'logits', datatype: 'FP32', shape: [1, 10], parameters: { binary_data_size: 40 } }, 'logits: binary_data_size 40');
  const logits = new Float32Array(out.logits.buffer.slice(out.logits.byteOffset, out.logits.byteOffset + 40));
  t.ok(closeTo(Array.from(logits), Array.from(want.logits)), 'binary logits equal forward()');
  t.ok(Array.isArray(json.outputs[1].data) && closeTo(json.outputs[1].data, softmax(Array.from(want.logits))), 'the output not asked as binary stays JSON');

  // Two images, each a 4-byte little-endian length and its bytes; every output binary by the request parameter.
  const pngs = await Promise.all([7, 8].map((s) => noisePng(s)));
  const alone = await Promise.all(pngs.map(async (p) => (await model.classify(p))[0]));
  const bytes = Buffer.concat(pngs.flatMap((p) => { const n = Buffer.alloc(4); n.writeUInt32LE(p.length); return [n, p]; }));
  const req2 = binaryRequest({
    parameters: { binary_data_output: true },
    inputs: [{ name: 'image', shape: [2], datatype: 'BYTES', parameters: { binary_data_size: bytes.length } }],
    outputs: [{ name: 'logits' }, { name: 'probabilities', parameters: { classification: 2 } }],
  }, [bytes]);
  const r2 = await requestRaw(base, { path: '/v2/models/evit/infer', ...req2 });
  t.equal(r2.status, 200, 'binary BYTES input: 200');
  const b2 = readBinaryResponse(r2);
  const l2 = new Float32Array(b2.data.logits.buffer.slice(b2.data.logits.byteOffset, b2.data.logits.byteOffset + 80));
  t.ok(closeTo(Array.from(l2), alone.flatMap((a) => a.logits)), 'logits of both images');
  const cls = bytesElements(b2.data.probabilities);
  t.deepEqual(cls.map((s) => Number(s.split(':')[1])), alone.flatMap((a) => a.top.slice(0, 2).map((x) => x.index)), `binary classification strings: ${cls.join(', ')}`);
  t.deepEqual(b2.json.outputs[1].shape, [2, 2], 'classification shape [2, 2]');
  await app.close();
});

test('every bad request is a 4xx {"error": message, "code"} and the server keeps serving', async (t) => {
  const { app, base } = await start({ bodyLimit: 2 * 1024 * 1024, maxPixels: 1_000_000 });
  const png = await noisePng(31);
  const gif = await sharp(png).gif().toBuffer();
  const img = (data, extra = {}) => ({ inputs: [{ name: 'image', shape: [data.length], datatype: 'BYTES', data, ...extra }] });
  const tensor = (n, shape = [1, 3, 224, 224], datatype = 'FP32') => ({ inputs: [{ name: 'input', shape, datatype, data: new Array(n).fill(0.5) }] });
  const full = 3 * 224 * 224;
  const rawFloats = Buffer.alloc(full * 4);
  const cases = [
    ['not JSON', '{"inputs": [', {}, 400, 'EVIT_BAD_REQUEST'],
    ['a JSON array', '[]', {}, 400, 'EVIT_BAD_INPUT'],
    ['no inputs', {}, {}, 400, 'EVIT_BAD_INPUT'],
    ['two inputs', { inputs: [img([png.toString('base64')]).inputs[0], tensor(full).inputs[0]] }, {}, 400, 'EVIT_BAD_INPUT'],
    ['an unknown input name', { inputs: [{ name: 'pixels', shape: [1], datatype: 'BYTES', data: ['x'] }] }, {}, 400, 'EVIT_BAD_INPUT'],
    ['input as INT32', tensor(full, [1, 3, 224, 224], 'INT32'), {}, 400, 'EVIT_BAD_INPUT'],
    ['input of the wrong image size', tensor(3 * 8 * 8, [1, 3, 8, 8]), {}, 400, 'EVIT_BAD_INPUT'],
    ['fewer values than the shape', tensor(full - 1), {}, 400, 'EVIT_BAD_INPUT'],
    ['a string among the values', { inputs: [{ name: 'input', shape: [1, 3, 224, 224], datatype: 'FP32', data: ['0.5', ...new Array(full - 1).fill(0)] }] }, {}, 400, 'EVIT_BAD_INPUT'],
    ['negative shape', { inputs: [{ name: 'input', shape: [-1, 3, 224, 224], datatype: 'FP32', data: [] }] }, {}, 400, 'EVIT_BAD_INPUT'],
    ['image not base64', img(['**not base64**']), {}, 400, 'EVIT_BAD_INPUT'],
    ['image count not the shape', { inputs: [{ name: 'image', shape: [2], datatype: 'BYTES', data: [png.toString('base64')] }] }, {}, 400, 'EVIT_BAD_INPUT'],
    ['image of non-image bytes', img([Buffer.from('nope').toString('base64')]), {}, 400, 'EVIT_BAD_INPUT'],
    ['a gif', img([gif.toString('base64')]), {}, 415, 'EVIT_UNSUPPORTED_MEDIA_TYPE'],
    ['a decompression bomb', img([(await pngClaiming(100_000, 100_000)).toString('base64')]), {}, 413, 'EVIT_IMAGE_TOO_LARGE'],
    ['an unknown output', { ...img([png.toString('base64')]), outputs: [{ name: 'features' }] }, {}, 400, 'EVIT_BAD_INPUT'],
    ['classification 0', { ...img([png.toString('base64')]), outputs: [{ name: 'logits', parameters: { classification: 0 } }] }, {}, 400, 'EVIT_BAD_OPTIONS'],
    ['keep_rate 1.5', { ...img([png.toString('base64')]), parameters: { keep_rate: 1.5 } }, {}, 400, 'EVIT_BAD_OPTIONS'],
    ['keep_rate a word', { ...img([png.toString('base64')]), parameters: { keep_rate: 'fast' } }, {}, 400, 'EVIT_BAD_OPTIONS'],
    ['binary_data_size past the body', binaryRequest({ inputs: [{ name: 'input', shape: [1, 3, 224, 224], datatype: 'FP32', parameters: { binary_data_size: full * 4 } }] }, [rawFloats.subarray(8)]), 'binary', 400, 'EVIT_BAD_INPUT'],
    ['binary data no input claims', binaryRequest({ ...tensor(full) }, [Buffer.alloc(16)]), 'binary', 400, 'EVIT_BAD_INPUT'],
    ['binary FP32 of the wrong size', binaryRequest({ inputs: [{ name: 'input', shape: [1, 3, 224, 224], datatype: 'FP32', parameters: { binary_data_size: 400 } }] }, [Buffer.alloc(400)]), 'binary', 400, 'EVIT_BAD_INPUT'],
    ['a header length past the body', { body: Buffer.from('{}'), headers: { 'content-type': 'application/octet-stream', 'inference-header-content-length': '99' } }, 'binary', 400, 'EVIT_BAD_REQUEST'],
    ['a body over the limit', tensor(3 * 224 * 224 * 4, [4, 3, 224, 224]), {}, 413, 'EVIT_BODY_TOO_LARGE'],
  ];
  for (const [what, body, kind, status, code] of cases) {
    const r = kind === 'binary' ? await requestRaw(base, { path: '/v2/models/evit/infer', ...body }) : await infer(base, body);
    const ok = r.status === status && typeof r.body?.error === 'string' && r.body.error.length > 0 && r.body.code === code;
    t.ok(ok, `${what}: ${r.status} ${r.body?.code} (${r.body?.error ?? r.text.slice(0, 80)})`);
  }
  const unknown = await infer(base, img([png.toString('base64')]), { name: 'resnet50' });
  t.ok(unknown.status === 404 && unknown.body.code === 'EVIT_NOT_FOUND', `unknown model: 404 (${unknown.body.error})`);
  // Clients that send no content type at all are read as JSON too.
  const bare = await request(base, { path: '/v2/models/evit/infer', body: JSON.stringify(img([png.toString('base64')])) });
  t.equal(bare.status, 200, 'no content type: 200');
  const [alone] = await model.classify(png);
  t.ok(closeTo(bare.body.outputs[0].data, alone.logits), 'and the image\'s logits');
  t.equal((await getJson(base, '/v2/health/ready')).status, 200, 'still ready after all of that');
  const m = (await request(base, { method: 'GET', path: '/metrics' })).text;
  t.equal(metric(m, 'evit_rejected_requests_total{route="infer",code="EVIT_BAD_INPUT"}'), cases.filter((c) => c[4] === 'EVIT_BAD_INPUT').length, 'rejections counted by code');
  t.equal(metric(m, 'evit_http_requests_total{route="infer",code="413"}'), 2, 'and by status');
  await app.close();
});

test('readiness: live but not ready while the model loads, then ready; work before that is 503 EVIT_NOT_READY', async (t) => {
  let resolveModel;
  const loading = new Promise((resolve) => { resolveModel = resolve; });
  const app = createServer({ model: loading, modelName: 'tiny' });
  const base = await app.listen({ host: '127.0.0.1', port: 0 });
  const live = await getJson(base, '/v2/health/live');
  t.deepEqual([live.status, live.body], [200, { live: true }], 'live while loading');
  const ready = await getJson(base, '/v2/health/ready');
  t.deepEqual([ready.status, ready.body], [400, { ready: false }], 'ready: 400 {"ready": false} while loading');
  t.deepEqual((await getJson(base, '/v2/models/tiny/ready')).body, { name: 'tiny', ready: false }, 'model not ready');
  const png = await noisePng(41);
  const early = await infer(base, { inputs: [{ name: 'image', shape: [1], datatype: 'BYTES', data: [png.toString('base64')] }] }, { name: 'tiny' });
  t.ok(early.status === 503 && early.body.code === 'EVIT_NOT_READY' && early.headers['retry-after'] === '1', `infer while loading: 503 EVIT_NOT_READY, Retry-After (${early.body.error})`);
  const v1 = await request(base, { headers: { 'content-type': 'image/png' }, body: png });
  t.ok(v1.status === 503 && v1.body.error.code === 'EVIT_NOT_READY', '/v1/classify while loading: 503 EVIT_NOT_READY');
  t.equal((await getJson(base, '/healthz')).body.status, 'loading', '/healthz says loading');
  t.equal(metric((await getJson(base, '/metrics')).text, 'evit_ready'), 0, 'evit_ready 0');
  resolveModel(model);
  await until('readiness', async () => (await getJson(base, '/v2/health/ready')).status === 200);
  t.pass('ready once the model has loaded');
  const r = await infer(base, { inputs: [{ name: 'image', shape: [1], datatype: 'BYTES', data: [png.toString('base64')] }] }, { name: 'tiny' });
  const [alone] = await model.classify(png);
  t.ok(r.status === 200 && closeTo(r.body.outputs[0].data, alone.logits), 'then infer answers');
  t.equal(metric((await getJson(base, '/metrics')).text, 'evit_ready'), 1, 'evit_ready 1');
  await app.close();

  const failing = createServer({ model: Promise.reject(new Error('checkpoint is truncated')) });
  const fbase = await failing.listen({ host: '127.0.0.1', port: 0 });
  await new Promise((r) => setTimeout(r, 20));
  t.equal((await getJson(fbase, '/v2/health/ready')).status, 400, 'a model that failed to load: never ready');
  const f = await infer(fbase, { inputs: [{ name: 'image', shape: [1], datatype: 'BYTES', data: [png.toString('base64')] }] });
  t.ok(f.status === 503 && /failed to load: checkpoint is truncated/.test(f.body.error), `infer says why (${f.body.error})`);
  await failing.close();
});

test('readiness: not ready while draining, still live; the accepted request finishes', async (t) => {
  // Nothing runs until the batcher is told to: the request is certainly queued while the server drains.
  const batcher = new Batcher(model, { maxBatchSize: 1000, maxWaitMs: 60_000 });
  const { app, base } = await start({ batcher });
  const net = require('node:net');
  const png = await noisePng(51);
  const body = JSON.stringify({ inputs: [{ name: 'image', shape: [1], datatype: 'BYTES', data: [png.toString('base64')] }] });
  // New connections are refused once closing, and a closing server answers one more request per
  // connection: each probe is pipelined behind a queued request on a connection of its own.
  const connect = () => {
    const sock = net.connect(Number(new URL(base).port), '127.0.0.1');
    const c = { sock, text: '' };
    sock.on('data', (d) => { c.text += d.toString('latin1'); });
    c.ended = new Promise((resolve) => sock.on('close', resolve));
    sock.write(`POST /v2/models/evit/infer HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
    return c;
  };
  const a = connect();
  const b = connect();
  await until('both requests to queue', () => batcher.queued === 2);
  const closing = app.close();
  await new Promise((r) => setTimeout(r, 50));
  a.sock.write('GET /v2/health/ready HTTP/1.1\r\nHost: localhost\r\n\r\n');
  b.sock.write('GET /v2/health/live HTTP/1.1\r\nHost: localhost\r\n\r\n');
  await new Promise((r) => setTimeout(r, 50));
  batcher.drain();
  await Promise.all([a.ended, b.ended]);
  await closing;
  const statuses = (c) => [...c.text.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => Number(m[1]));
  t.deepEqual(statuses(a), [200, 400], 'the accepted request 200, then ready: 400 while draining');
  t.ok(a.text.includes('"ready":false'), '{"ready": false}');
  t.deepEqual(statuses(b), [200, 200], 'the accepted request 200, then live: 200 while draining');
  t.ok(b.text.includes('"live":true'), '{"live": true}');
  t.ok(a.text.includes('"name":"logits"') && b.text.includes('"name":"logits"'), 'both accepted requests got their logits');
  await batcher.close();
});

test('teardown', (t) => {
  model.dispose();
  t.end();
});
