'use strict';
// Shared pieces of the server tests: test images, a tiny HTTP client, polling.
const http = require('node:http');
const zlib = require('node:zlib');
const sharp = require('sharp');
const { mulberry32 } = require('./reference');

/** A PNG of random pixels (seeded), w×h RGB. */
async function noisePng(seed, w = 40, h = 32) {
  const rand = mulberry32(seed);
  const raw = Buffer.alloc(w * h * 3);
  for (let i = 0; i < raw.length; i++) raw[i] = Math.floor(rand() * 256);
  return sharp(raw, { raw: { width: w, height: h, channels: 3 } }).png().toBuffer();
}

/** A valid small PNG whose header claims w×h: what a decompression bomb looks like to a decoder. */
async function pngClaiming(w, h) {
  const png = Buffer.from(await sharp({ create: { width: 8, height: 8, channels: 3, background: '#808080' } }).png().toBuffer());
  // IHDR data sits at bytes 16..28 after the 8-byte signature, 4-byte length and 'IHDR'; its CRC follows.
  png.writeUInt32BE(w, 16);
  png.writeUInt32BE(h, 20);
  png.writeUInt32BE(zlib.crc32(png.subarray(12, 29)), 29);
  return png;
}

/** One HTTP request; resolves {status, headers, body (parsed JSON when it is JSON), text}. */
function request(base, { method = 'POST', path = '/v1/classify', headers = {}, body } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request(new URL(path, base), { method, headers, agent: false }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let parsed = null;
        if (/json/.test(res.headers['content-type'] ?? '')) parsed = JSON.parse(text);
        resolve({ status: res.statusCode, headers: res.headers, body: parsed, text });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

const post = (base, type, body, path = '/v1/classify') =>
  request(base, { path, headers: type === null ? {} : { 'content-type': type }, body });

async function until(what, check, timeoutMs = 30_000) {
  const t0 = Date.now();
  while (!(await check())) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** The value of one sample line of a Prometheus text page (null when absent). */
function metric(text, name) {
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? null : Number(line.slice(name.length + 1));
}

/**
 * Lines of a Prometheus text page (format 0.0.4) that are not a comment, a blank line or a sample:
 * metric and label names as Prometheus defines them, values as Go's ParseFloat reads them.
 */
function badPrometheusLines(text) {
  const name = '[a-zA-Z_:][a-zA-Z0-9_:]*';
  const label = '[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\\\\n]|\\\\[\\\\"n])*"';
  const sample = new RegExp(`^${name}(\\{${label}(,${label})*\\})? (-?[0-9.]+(e[+-]?[0-9]+)?|[+-]?Inf|nan)( -?[0-9]+)?$`, 'i');
  const comment = new RegExp(`^# (HELP|TYPE) ${name}( .*)?$`);
  return text.split('\n').filter((l) => l !== '' && !comment.test(l) && !sample.test(l));
}

module.exports = { noisePng, pngClaiming, request, post, until, metric, badPrometheusLines };
