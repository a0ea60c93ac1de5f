'use strict';
// Mutations of HTTP requests for the fuzz test and the soak: bytes, JSON values and structure,
// content types, query options and binary header lengths, each drawn from a seeded generator.
const http = require('node:http');
const { IMAGE_TYPES, NPY, readResponse } = require('./serveCorpus');

const pick = (rand, list) => list[Math.floor(rand() * list.length)];

const JSON_CHARS = '{}[]",:0123456789.eE-+tfnul\\ ';
/** 1–4 byte edits: flips, JSON-ish characters, inserts, deletions, cuts and repeats. */
function mutateBytes(buf, rand) {
  let b = Buffer.from(buf);
  const ops = 1 + Math.floor(rand() * 4);
  for (let i = 0; i < ops && b.length > 0; i++) {
    const at = Math.floor(rand() * b.length);
    const k = rand();
    if (k < 0.3) b[at] ^= 1 << Math.floor(rand() * 8);
    else if (k < 0.5) b[at] = JSON_CHARS.charCodeAt(Math.floor(rand() * JSON_CHARS.length));
    else if (k < 0.6) b = Buffer.concat([b.subarray(0, at), Buffer.from([Math.floor(rand() * 256)]), b.subarray(at)]);
    else if (k < 0.75) b = Buffer.concat([b.subarray(0, at), b.subarray(Math.min(b.length, at + 1 + Math.floor(rand() * 16)))]);
    else if (k < 0.85) b = b.subarray(0, at);
    else { const n = 1 + Math.floor(rand() * 64); b = Buffer.concat([b.subarray(0, at + n), b.subarray(at, b.length)]); }
  }
  return b;
}

const VALUES = [null, true, false, 0, -1, 1, 0.5, 1.5, -0, 1e308, 2 ** 53, 3e38, -3e38, 1e-45, '', 'x', '0x1', ' 0.5 ', '1e1', 'NaN',
  [], {}, [[[]]], ['AAAA'], { name: 'input' }, 'data:image/png;base64,AAAA', '=', 'AAAA'.repeat(100)];
/** Deeper than any request needs, or just under. */
const nest = (n, v) => (n === 0 ? v : [nest(n - 1, v)]);

/** Replaces, deletes, wraps or adds one value somewhere in a parsed JSON request. */
function mutateJson(value, rand) {
  const root = { v: structuredClone(value) };
  let holder = root;
  let key = 'v';
  // Walk down a random path, stopping early sometimes.
  while (holder[key] !== null && typeof holder[key] === 'object' && rand() < 0.75) {
    const node = holder[key];
    const keys = Array.isArray(node) ? node.map((_, i) => i) : Object.keys(node);
    if (keys.length === 0) break;
    holder = node;
    key = Array.isArray(node) && node.length > 8 && rand() < 0.9 ? Math.floor(rand() * node.length) : pick(rand, keys);
  }
  const k = rand();
  if (k < 0.45) holder[key] = pick(rand, VALUES);
  else if (k < 0.55 && Array.isArray(holder)) holder.splice(key, 1);
  else if (k < 0.55) delete holder[key];
  else if (k < 0.65) holder[key] = nest(Math.floor(rand() * 24), holder[key]);
  else if (k < 0.75 && holder[key] !== null && typeof holder[key] === 'object' && !Array.isArray(holder[key])) holder[key][pick(rand, ['extra', 'parameters', 'data', 'shape', 'binary_data_size', 'classification', 'top', 'keepRate', 'image', 'npy'])] = pick(rand, VALUES);
  else if (k < 0.85 && typeof holder[key] === 'number') holder[key] = holder[key] * pick(rand, [-1, 2, 0.5, 1e6, 1e-6]) + pick(rand, [0, 1, -1]);
  else if (k < 0.88 && Array.isArray(holder[key])) holder[key] = [...holder[key], ...holder[key].slice(0, 1 + Math.floor(rand() * 2))];
  else if (k < 0.92 && Array.isArray(holder) && typeof holder[key] === 'number') holder.fill(pick(rand, [3e38, -1e38, 1e30, 0, 1e-40]));
  else holder[key] = String(holder[key]);
  return root.v;
}

const TYPES = [...IMAGE_TYPES, NPY, 'application/json', 'application/json; charset=utf-8', 'IMAGE/PNG', 'text/plain', 'application/octet-stream', '', 'image/gif', 'multipart/form-data; boundary=x'];
const QUERY_VALUES = ['3', '0', '-1', '1.5', '10', '0x1', '1e1', ' 2 ', '', 'abc', '0.5', '1', '0.25', 'Infinity', 'NaN', '1e-400', '0.05', '.9'];

/** One mutated request from a seed, with a description of what was done to it. */
function mutateRequest(seed, rand) {
  const req = { ...seed, headers: { ...seed.headers } };
  const how = [];
  const k = rand();
  const jsonPart = () => {
    const n = req.headers['inference-header-content-length'];
    return n === undefined ? [req.body, Buffer.alloc(0)] : [req.body.subarray(0, Number(n)), req.body.subarray(Number(n))];
  };
  const isJson = req.route === 'v2' || /json/.test(req.headers['content-type']);
  if (k < 0.02) {
    how.push('none');
  } else if (k < 0.4 || !isJson) {
    if (req.route === 'v2' && req.headers['inference-header-content-length'] !== undefined && rand() < 0.5) {
      // The binary part only: tensor bytes (NaN, infinities, huge values) or image bytes.
      const [head, bin] = jsonPart();
      req.body = Buffer.concat([head, mutateBytes(bin, rand)]);
      how.push('binary bytes');
    } else {
      req.body = mutateBytes(req.body, rand);
      how.push('bytes');
    }
  } else {
    const [head, bin] = jsonPart();
    let value;
    try { value = JSON.parse(head.toString('utf8')); } catch { value = null; }
    const changed = Buffer.from(JSON.stringify(mutateJson(value, rand)) ?? 'null');
    req.body = Buffer.concat([changed, bin]);
    if (req.headers['inference-header-content-length'] !== undefined && rand() < 0.9) req.headers['inference-header-content-length'] = String(changed.length);
    how.push('json value');
  }
  if (rand() < 0.08) {
    req.headers['content-type'] = pick(rand, TYPES);
    how.push(`content-type ${req.headers['content-type']}`);
  }
  if (req.route === 'v1' && rand() < 0.15) {
    const q = new URLSearchParams();
    for (let i = 0, n = 1 + Math.floor(rand() * 3); i < n; i++) q.append(pick(rand, ['top', 'keepRate', 'kept', 'other']), pick(rand, [...QUERY_VALUES, 'true']));
    req.path = `/v1/classify?${q}`;
    how.push(`query ${q}`);
  }
  if (req.headers['inference-header-content-length'] !== undefined && rand() < 0.05) {
    req.headers['inference-header-content-length'] = pick(rand, ['0', '-1', 'abc', '1', String(req.body.length + 1), ` ${req.headers['inference-header-content-length']}`]);
    how.push(`header length ${req.headers['inference-header-content-length']}`);
  }
  if (req.headers['content-type'] === '') delete req.headers['content-type'];
  return { req, how: `${seed.kind}: ${how.join(', ')}` };
}

function send(base, agent, req, timeoutMs = 15_000) {
  return new Promise((resolve) => {
    const r = http.request(new URL(req.path, base), { method: req.method ?? 'POST', headers: { ...req.headers, 'content-length': req.body.length }, agent, timeout: timeoutMs }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve(readResponse(res.statusCode, res.headers, Buffer.concat(chunks))));
      res.on('error', (err) => resolve({ status: 0, error: err.message }));
    });
    r.on('timeout', () => { r.destroy(new Error(`no answer within ${timeoutMs} ms`)); });
    r.on('error', (err) => resolve({ status: 0, error: err.message }));
    r.end(req.body);
  });
}


module.exports = { mutateRequest, mutateBytes, mutateJson, send };
