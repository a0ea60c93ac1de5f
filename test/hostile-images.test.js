'use strict';
// Images that are cheap to send and expensive to decode, and damaged ones: each is refused from its
// header, or decoded within bounded cost, and a damaged one is an InputError, never a classification.
const test = require('tape');
const zlib = require('node:zlib');
const sharp = require('sharp');
const { preprocessImage, resolvePreprocess, InputError, AbortedError } = require('../dist');

const pre = resolvePreprocess({ imgSize: 224 });

/** A PNG whose header claims width × height (greyscale), with one empty row of data: decoding it is not needed to refuse it. */
function claimedPng(width, height) {
  const chunk = (type, data) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const td = Buffer.concat([Buffer.from(type, 'latin1'), data]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(zlib.crc32(td) >>> 0);
    return Buffer.concat([len, td, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 0; // greyscale
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', zlib.deflateSync(Buffer.alloc(1 + Math.min(width, 1 << 16)))),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

async function refused(t, input, re, label, limits) {
  const t0 = performance.now();
  try {
    await preprocessImage(input, pre, limits);
    t.fail(`${label}: accepted`);
  } catch (err) {
    t.ok(err instanceof InputError, `${label}: ${err.name}: ${err.message}`);
    t.match(err.message, re, `${label}: says why`);
  }
  const ms = performance.now() - t0;
  t.ok(ms < 1000, `${label}: answered in ${ms.toFixed(0)} ms`);
}

test('huge and absurdly shaped images are refused from their headers', async (t) => {
  await refused(t, claimedPng(1, 40_000_000), /1x40000000: its aspect ratio is beyond 64:1/, '1 x 40,000,000 PNG');
  await refused(t, claimedPng(40_000_000, 1), /40000000x1: its aspect ratio is beyond 64:1/, '40,000,000 x 1 PNG');
  await refused(t, claimedPng(100_000, 100_000), /over the decode limit of 100000000 pixels/, '100,000 x 100,000 PNG');
  await refused(t, claimedPng(3000, 3000), /over the decode limit of 1000000 pixels/, 'a lower limit', { maxPixels: 1_000_000 });
});

test('a real 1 x 4,000,000 PNG (8 KB) is refused at once instead of decoded', async (t) => {
  const png = await sharp(Buffer.alloc(4_000_000, 128), { raw: { width: 1, height: 4_000_000, channels: 1 } })
    .png({ compressionLevel: 9 }).toBuffer();
  t.ok(png.length < 128 * 1024, `${png.length} bytes`);
  await refused(t, png, /aspect ratio/, 'a thin PNG');
});

test('a JPEG whose data is corrupt is an InputError, not a classification', async (t) => {
  const [w, h] = [640, 480];
  const px = Buffer.alloc(w * h * 3);
  for (let i = 0; i < w * h; i++) px.fill((i * 7) % 251, 3 * i, 3 * i + 3);
  const good = await sharp(px, { raw: { width: w, height: h, channels: 3 } }).jpeg({ quality: 90 }).toBuffer();
  // The first 600 bytes (markers and tables) of a real JPEG, then noise.
  let seed = 3;
  const noise = Buffer.alloc(good.length - 600);
  for (let i = 0; i < noise.length; i++) {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    noise[i] = seed >>> 24;
  }
  await refused(t, Buffer.concat([good.subarray(0, 600), noise]), /cannot decode/, 'a JPEG of 600 good bytes and noise');
  await refused(t, good.subarray(0, good.length >> 1), /cannot decode/, 'a JPEG cut in half');
  const ok = await preprocessImage(good, pre);
  t.equal(ok.length, 3 * 224 * 224, 'the intact JPEG decodes');
});

test('a very large photo is reduced on load, with results within a few grey levels of the full decode', async (t) => {
  // 5000 x 4000 = 20 MP, over the 16 MP shrink-on-load threshold.
  const w = 5000, h = 4000;
  const raw = Buffer.alloc(w * h * 3);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
    const i = (y * w + x) * 3;
    raw[i] = (x * 255) / w;
    raw[i + 1] = (y * 255) / h;
    raw[i + 2] = 128 + 100 * Math.sin(x / 97) * Math.cos(y / 89);
  }
  const jpeg = await sharp(raw, { raw: { width: w, height: h, channels: 3 } }).jpeg({ quality: 92 }).toBuffer();
  const reduced = await preprocessImage(jpeg, pre);
  const exact = await preprocessImage(jpeg, pre, { shrinkOnLoadAbove: Infinity });
  let worst = 0, sum = 0;
  for (let i = 0; i < exact.length; i++) {
    const c = Math.floor(i / (224 * 224));
    const levels = Math.abs(reduced[i] - exact[i]) * pre.std[c] * 255;
    worst = Math.max(worst, levels);
    sum += levels;
  }
  t.ok(sum / exact.length < 1.5, `mean difference ${(sum / exact.length).toFixed(2)} grey levels`);
  t.ok(worst < 12, `largest difference ${worst.toFixed(1)} grey levels`);
  t.ok(reduced.some((v, i) => v !== exact[i]), 'the reduced path really ran (the results are not bit-identical)');
});

test('an aborted request decodes nothing', async (t) => {
  const ac = new AbortController();
  ac.abort(new Error('client went away'));
  const png = await sharp({ create: { width: 300, height: 300, channels: 3, background: 'white' } }).png().toBuffer();
  try {
    await preprocessImage(png, pre, { signal: ac.signal });
    t.fail('decoded');
  } catch (err) {
    t.ok(err instanceof AbortedError, `${err.name} [${err.code}]: ${err.message}`);
  }
});
