'use strict';
const test = require('tape');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const sharp = require('sharp');
const { resolvePreprocess, preprocessImage, preprocessBatch, resizedSize } = require('../dist/preprocess');
const { readNpy } = require('../dist/npy');
const { InputError, OptionsError } = require('../dist/errors');

const FIX = path.join(__dirname, 'fixtures', 'npy');
const MEAN = [0.485, 0.456, 0.406];
const STD = [0.229, 0.224, 0.225];

/** Encodes an interleaved 8-bit buffer as PNG (1 channel: a greyscale PNG). */
function png(raw, width, height, channels) {
  const img = sharp(raw, { raw: { width, height, channels } });
  return (channels === 1 ? img.toColourspace('b-w') : img).png().toBuffer();
}

/** Builds a raw image whose pixel (x, y) is fn(x, y) (an array of `channels` values). */
function makeRaw(width, height, channels, fn) {
  const buf = Buffer.alloc(width * height * channels);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const px = fn(x, y);
      for (let c = 0; c < channels; c++) buf[(y * width + x) * channels + c] = px[c];
    }
  }
  return buf;
}

/** ToTensor + Normalize of one 8-bit value, in float32 like torch. */
function norm(v, mean, std) {
  return Math.fround(Math.fround(Math.fround(v / 255) - Math.fround(mean)) / Math.fround(std));
}

/** Recovers the 8-bit value behind a normalised output. */
function denorm(x, mean, std) {
  return Math.round((x * std + mean) * 255) + 0; // + 0 turns -0 into 0
}

/** Reads pixel (x, y) of a CHW tensor back as 8-bit values. */
function pixel(out, size, x, y, mean = MEAN, std = STD) {
  return mean.map((m, c) => denorm(out[c * size * size + y * size + x], m, std[c]));
}

async function rejects(t, promise, Cls, code, re, msg) {
  try {
    await promise;
    t.fail(`${msg}: did not reject`);
  } catch (err) {
    t.ok(err instanceof Cls, `${msg}: ${Cls.name}`);
    t.equal(err.code, code, `${msg}: code ${code}`);
    t.match(err.message, re, `${msg}: ${err.message}`);
    return err;
  }
  return undefined;
}

test('resolvePreprocess fills in timm DeiT defaults', (t) => {
  t.deepEqual(resolvePreprocess({}), {
    imgSize: 224, resizeSize: 256, cropPct: 0.875, mean: MEAN, std: STD, channels: 3,
  }, 'defaults');
  t.deepEqual(resolvePreprocess(), resolvePreprocess({}), 'no argument');
  const grey = resolvePreprocess({ channels: 1 });
  t.deepEqual([grey.mean, grey.std], [[0.449], [0.226]], 'single-channel defaults');
  t.equal(resolvePreprocess({ imgSize: 384, cropPct: 1 }).resizeSize, 384, 'cropPct 1');
  t.equal(resolvePreprocess({ imgSize: 160, cropPct: 0.9 }).resizeSize, 177, 'floor(160 / 0.9)');
  const r = resolvePreprocess({ imgSize: 224, resizeSize: 248 });
  t.equal(r.resizeSize, 248, 'explicit resizeSize');
  t.equal(r.cropPct, 224 / 248, 'cropPct derived from resizeSize');
  t.equal(resolvePreprocess({ resizeSize: 300, cropPct: 0.95 }).resizeSize, 300, 'resizeSize wins over cropPct');
  t.deepEqual(resolvePreprocess(r), r, 'idempotent');
  t.deepEqual(resizedSize(300, 400, 256), [256, 341], 'portrait: shorter side to 256, longer floored');
  t.deepEqual(resizedSize(500, 375, 256), [341, 256], 'landscape');
  t.deepEqual(resizedSize(256, 256, 256), [256, 256], 'square');
  t.end();
});

test('resolvePreprocess rejects bad options with OptionsError', (t) => {
  const cases = [
    [{ imgSize: 0 }, /imgSize must be a positive integer, got 0/],
    [{ imgSize: 224.5 }, /imgSize .* got 224\.5/],
    [{ imgSize: '224' }, /imgSize/],
    [{ channels: 2 }, /channels must be 1 or 3, got 2/],
    [{ cropPct: 0 }, /cropPct must be a number in \(0, 1\], got 0/],
    [{ cropPct: 1.2 }, /cropPct .* got 1\.2/],
    [{ cropPct: NaN }, /cropPct/],
    [{ resizeSize: -1 }, /resizeSize must be a positive integer, got -1/],
    [{ resizeSize: 200 }, /resizeSize \(200\) is smaller than imgSize \(224\)/],
    [{ mean: [0.5, 0.5] }, /mean must have one entry per channel: expected 3, got 2/],
    [{ channels: 1, std: STD }, /std must have one entry per channel: expected 1, got 3/],
    [{ std: [0.2, 0, 0.2] }, /std\[1\] must be > 0, got 0/],
    [{ std: [0.2, 0.2, -1] }, /std\[2\] must be > 0, got -1/],
    [{ mean: [0.5, NaN, 0.5] }, /mean\[1\] must be a finite number/],
    [{ mean: 0.5 }, /mean must be an array of 3 numbers/],
  ];
  for (const [opts, re] of cases) {
    try {
      resolvePreprocess(opts);
      t.fail(`${JSON.stringify(opts)} accepted`);
    } catch (err) {
      t.ok(err instanceof OptionsError && err.code === 'EVIT_BAD_OPTIONS', `OptionsError for ${JSON.stringify(opts)}`);
      t.match(err.message, re, err.message);
    }
  }
  t.throws(() => resolvePreprocess(null), OptionsError, 'null options');
  t.end();
});

test('constant-colour image: shape and exact normalisation', async (t) => {
  const rgb = [10, 128, 250];
  const img = await png(makeRaw(300, 400, 3, () => rgb), 300, 400, 3); // resized to 256x341
  const out = await preprocessImage(img, resolvePreprocess({}));
  t.ok(out instanceof Float32Array, 'Float32Array');
  t.equal(out.length, 3 * 224 * 224, 'length 3*224*224');
  for (let c = 0; c < 3; c++) {
    const want = norm(rgb[c], MEAN[c], STD[c]);
    t.ok(Math.abs(want - ((rgb[c] / 255 - MEAN[c]) / STD[c])) < 1e-6, `float32 formula matches ((v/255)-mean)/std, channel ${c}`);
    let worst = 0;
    for (let i = 0; i < 224 * 224; i++) worst = Math.max(worst, Math.abs(out[c * 224 * 224 + i] - want));
    t.ok(worst <= 1e-6, `channel ${c} equals ((${rgb[c]}/255)-mean)/std everywhere (max err ${worst})`);
  }
  const custom = await preprocessImage(img, resolvePreprocess({ imgSize: 32, resizeSize: 40, mean: [0.5, 0.5, 0.5], std: [0.5, 0.25, 2] }));
  t.equal(custom.length, 3 * 32 * 32, 'custom size');
  t.ok(Math.abs(custom[0] - (10 / 255 - 0.5) / 0.5) < 1e-6, 'custom mean/std, channel 0');
  t.ok(Math.abs(custom[32 * 32] - (128 / 255 - 0.5) / 0.25) < 1e-6, 'custom mean/std, channel 1');
  t.ok(Math.abs(custom[2 * 32 * 32] - (250 / 255 - 0.5) / 2) < 1e-6, 'custom mean/std, channel 2');
});

test('center crop uses torchvision offsets (round half to even)', async (t) => {
  // Pixel (x, y) encodes its own position: R = x & 255, G = x >> 8, B = y & 255.
  const coded = (x, y) => [x & 255, x >> 8, y & 255];
  // Shorter side already 256: no resize, crop only.
  for (const [w, h, left, top] of [
    [512, 256, 144, 16], // (512 - 224) / 2 = 144
    [513, 256, 144, 16], // 144.5 -> 144 (even)
    [515, 256, 146, 16], // 145.5 -> 146 (even)
    [256, 515, 16, 146],
  ]) {
    const out = await preprocessImage(await png(makeRaw(w, h, 3, coded), w, h, 3), resolvePreprocess({}));
    let bad = 0;
    for (let y = 0; y < 224; y += 3) {
      for (let x = 0; x < 224; x += 3) {
        const want = coded(left + x, top + y);
        const got = pixel(out, 224, x, y);
        if (got.some((v, c) => v !== want[c])) bad++;
      }
    }
    t.equal(bad, 0, `${w}x${h}: crop starts at left ${left}, top ${top}`);
    t.deepEqual(pixel(out, 224, 0, 0), coded(left, top), `${w}x${h}: first pixel`);
    t.deepEqual(pixel(out, 224, 223, 223), coded(left + 223, top + 223), `${w}x${h}: last pixel`);
  }
});

test('resize keeps geometry when shrinking and when enlarging', async (t) => {
  // Red left of x = w/2, blue right of it; after resizing to 384x256 the edge is at
  // x = 192, i.e. x = 192 - 80 = 112 inside the crop (left = (384 - 224) / 2 = 80).
  for (const [w, h] of [[600, 400], [150, 100]]) {
    const raw = makeRaw(w, h, 3, (x) => (x < w / 2 ? [255, 0, 0] : [0, 0, 255]));
    const out = await preprocessImage(await png(raw, w, h, 3), resolvePreprocess({}));
    t.equal(out.length, 3 * 224 * 224, `${w}x${h}: length`);
    t.deepEqual(pixel(out, 224, 108, 100), [255, 0, 0], `${w}x${h}: red left of the edge`);
    t.deepEqual(pixel(out, 224, 116, 100), [0, 0, 255], `${w}x${h}: blue right of the edge`);
    t.deepEqual(pixel(out, 224, 0, 0), [255, 0, 0], `${w}x${h}: top-left red`);
    t.deepEqual(pixel(out, 224, 223, 223), [0, 0, 255], `${w}x${h}: bottom-right blue`);
  }
});

test('agrees with PIL bicubic resize + crop (reference computed with Pillow)', async (t) => {
  const src = await readNpy(path.join(FIX, 'pil_src_40x30.npy')); // [30, 40, 3] uint8 values
  t.deepEqual(src.shape, [30, 40, 3], 'source shape');
  const img = await png(Buffer.from(Uint8Array.from(src.data)), 40, 30, 3);
  for (const [file, imgSize, resizeSize, channels, maxLevels, what] of [
    ['pil_ref_rgb_24_30.npy', 24, 30, 3, 0, 'crop only: identical'],
    ['pil_ref_rgb_32_36.npy', 32, 36, 3, 0, 'enlarging: identical'],
    ['pil_ref_rgb_16_20.npy', 16, 20, 3, 1, 'shrinking: within 1/255'],
    ['pil_ref_l_16_20.npy', 16, 20, 1, 1, 'greyscale, shrinking: within 1/255'],
  ]) {
    const ref = await readNpy(path.join(FIX, file));
    const o = resolvePreprocess({ imgSize, resizeSize, channels });
    const out = await preprocessImage(img, o);
    t.deepEqual(ref.shape, [channels, imgSize, imgSize], `${file}: reference shape`);
    t.equal(out.length, ref.data.length, `${file}: length`);
    let worst = 0;
    for (let i = 0; i < out.length; i++) {
      const c = Math.floor(i / (imgSize * imgSize));
      worst = Math.max(worst, Math.abs(out[i] - ref.data[i]) * o.std[c] * 255);
    }
    t.ok(worst <= maxLevels + 1e-3, `${file}: ${what} (max diff ${worst.toFixed(4)} levels)`);
  }
});

test('alpha is dropped, not composited', async (t) => {
  const rgb = [200, 50, 100];
  for (const [w, h, alpha] of [[300, 300, 0], [256, 256, 128]]) {
    const img = await png(makeRaw(w, h, 4, () => [...rgb, alpha]), w, h, 4);
    t.equal((await sharp(img).metadata()).channels, 4, `${w}x${h}: input has 4 channels`);
    const out = await preprocessImage(img, resolvePreprocess({}));
    t.equal(out.length, 3 * 224 * 224, `${w}x${h} alpha ${alpha}: 3 channels out`);
    t.deepEqual(pixel(out, 224, 0, 0), rgb, `${w}x${h} alpha ${alpha}: colour kept at a corner`);
    t.deepEqual(pixel(out, 224, 111, 111), rgb, `${w}x${h} alpha ${alpha}: colour kept in the middle`);
  }
});

test('greyscale input and the channels option', async (t) => {
  const grey = await png(makeRaw(256, 300, 1, (x, y) => [(x + y) & 255]), 256, 300, 1);
  t.equal((await sharp(grey).metadata()).channels, 1, 'input has 1 channel');
  const out3 = await preprocessImage(grey, resolvePreprocess({}));
  t.equal(out3.length, 3 * 224 * 224, 'channels 3: three planes');
  let unequal = 0;
  for (let i = 0; i < 224 * 224; i += 7) {
    const [r, g, b] = [0, 1, 2].map((c) => denorm(out3[c * 224 * 224 + i], MEAN[c], STD[c]));
    if (r !== g || g !== b) unequal++;
  }
  t.equal(unequal, 0, 'channels 3: the three channels carry the same grey value');
  // No resize here (shorter side 256): top = round(76 / 2) = 38, left = 16.
  t.deepEqual(pixel(out3, 224, 5, 7), [66, 66, 66], 'channels 3: grey value at (5, 7)');

  const o1 = resolvePreprocess({ channels: 1 });
  const out1 = await preprocessImage(grey, o1);
  t.equal(out1.length, 224 * 224, 'channels 1: one plane');
  t.equal(out1[7 * 224 + 5], norm(66, 0.449, 0.226), 'channels 1: normalised with the single-channel defaults');

  // Colour input with channels 1: PIL's convert('L') luma, per quadrant.
  const colours = [[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 200, 30]];
  const quad = await png(makeRaw(256, 256, 3, (x, y) => colours[(y >= 128 ? 2 : 0) + (x >= 128 ? 1 : 0)]), 256, 256, 3);
  const outL = await preprocessImage(quad, o1);
  const pilL = ([r, g, b]) => (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16;
  [[50, 50], [170, 50], [50, 170], [170, 170]].forEach(([x, y], k) => {
    t.equal(denorm(outL[y * 224 + x], 0.449, 0.226), pilL(colours[k]), `luma of rgb(${colours[k]}) is ${pilL(colours[k])}`);
  });
});

test('JPEG input, EXIF orientation and file paths', async (t) => {
  const rgb = [40, 160, 220];
  const jpeg = await sharp(makeRaw(320, 240, 3, () => rgb), { raw: { width: 320, height: 240, channels: 3 } })
    .jpeg({ quality: 100 }).toBuffer();
  const out = await preprocessImage(jpeg, resolvePreprocess({}));
  t.equal(out.length, 3 * 224 * 224, 'JPEG: length');
  const px = pixel(out, 224, 100, 100);
  t.ok(px.every((v, c) => Math.abs(v - rgb[c]) <= 2), `JPEG: colour ${px} close to ${rgb}`);

  // Stored 40x20, left half red, right half blue, EXIF orientation 6 (rotate 90
  // degrees clockwise): upright it is 20x40 with red on top and blue below.
  const stored = makeRaw(40, 20, 3, (x) => (x < 20 ? [255, 0, 0] : [0, 0, 255]));
  const rotated = await sharp(stored, { raw: { width: 40, height: 20, channels: 3 } })
    .jpeg({ quality: 100 }).withMetadata({ orientation: 6 }).toBuffer();
  t.equal((await sharp(rotated).metadata()).orientation, 6, 'fixture carries orientation 6');
  const small = resolvePreprocess({ imgSize: 20, resizeSize: 20 });
  const up = await preprocessImage(rotated, small); // 20x40 upright -> crop rows 10..29
  const near = (a, b) => a.every((v, c) => Math.abs(v - b[c]) <= 24);
  t.ok(near(pixel(up, 20, 17, 3), [255, 0, 0]), `upright: top right is red (${pixel(up, 20, 17, 3)})`);
  t.ok(near(pixel(up, 20, 2, 16), [0, 0, 255]), `upright: bottom left is blue (${pixel(up, 20, 2, 16)})`);

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'evit-pre-'));
  try {
    const file = path.join(dir, 'img.jpg');
    fs.writeFileSync(file, jpeg);
    const fromPath = await preprocessImage(file, resolvePreprocess({}));
    t.deepEqual(Array.from(fromPath), Array.from(out), 'path and buffer give the same tensor');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('undecodable inputs give InputError naming the input', async (t) => {
  const o = resolvePreprocess({});
  const junk = Buffer.from('this is not an image at all');
  let err = await rejects(t, preprocessImage(junk, o), InputError, 'EVIT_BAD_INPUT', /buffer of 27 bytes/, 'not an image');
  t.ok(err && err.cause instanceof Error, 'not an image: sharp error kept as cause');

  const good = await png(makeRaw(300, 300, 3, (x, y) => [x & 255, y & 255, (x * y) & 255]), 300, 300, 3);
  const cut = good.subarray(0, Math.floor(good.length / 2));
  err = await rejects(t, preprocessImage(cut, o), InputError, 'EVIT_BAD_INPUT', new RegExp(`buffer of ${cut.length} bytes`), 'truncated PNG');
  t.ok(err && err.cause instanceof Error, 'truncated PNG: cause');

  const missing = path.join(os.tmpdir(), `evit-no-such-image-${process.pid}.png`);
  err = await rejects(t, preprocessImage(missing, o), InputError, 'EVIT_BAD_INPUT',
    new RegExp(missing.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')), 'missing file');
  t.ok(err && err.cause instanceof Error, 'missing file: cause');

  await rejects(t, preprocessImage(Buffer.alloc(0), o), InputError, 'EVIT_BAD_INPUT', /buffer of 0 bytes/, 'empty buffer');
  await rejects(t, preprocessImage(42, o), InputError, 'EVIT_BAD_INPUT', /file path or a Buffer, got number/, 'wrong type');
  await rejects(t, preprocessImage(good, { ...o, imgSize: -3 }), OptionsError, 'EVIT_BAD_OPTIONS', /imgSize/, 'bad options');
});

test('preprocessBatch packs NCHW in input order', async (t) => {
  const colours = [[255, 0, 0], [0, 255, 0], [0, 0, 255], [90, 90, 90], [1, 2, 3]];
  const sizes = [[300, 400], [256, 256], [640, 480], [100, 120], [257, 900]];
  const imgs = await Promise.all(colours.map((rgb, k) => {
    const [w, h] = sizes[k];
    return png(makeRaw(w, h, 3, () => rgb), w, h, 3);
  }));
  const o = resolvePreprocess({ imgSize: 64, resizeSize: 72 });
  const { data, shape } = await preprocessBatch(imgs, o);
  t.deepEqual(shape, [5, 3, 64, 64], 'shape');
  t.equal(data.length, 5 * 3 * 64 * 64, 'length');
  const per = 3 * 64 * 64;
  for (let k = 0; k < imgs.length; k++) {
    const single = await preprocessImage(imgs[k], o);
    t.deepEqual(Array.from(data.subarray(k * per, (k + 1) * per)), Array.from(single), `image ${k} in slot ${k}`);
    t.deepEqual(pixel(data.subarray(k * per), 64, 10, 10), colours[k], `image ${k} colour`);
  }
  const grey = await preprocessBatch(imgs.slice(0, 2), resolvePreprocess({ imgSize: 64, resizeSize: 72, channels: 1 }));
  t.deepEqual(grey.shape, [2, 1, 64, 64], 'channels 1 shape');

  await rejects(t, preprocessBatch([], o), InputError, 'EVIT_BAD_INPUT', /non-empty/, 'empty batch');
  await rejects(t, preprocessBatch([imgs[0], Buffer.from('nope'), imgs[1]], o), InputError, 'EVIT_BAD_INPUT',
    /buffer of 4 bytes/, 'one bad image');
  await rejects(t, preprocessBatch(imgs, { ...o, channels: 4 }), OptionsError, 'EVIT_BAD_OPTIONS', /channels/, 'bad options');
});
