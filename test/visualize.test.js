'use strict';
// Per-block patch masks (kept / fused / dropped) and their rendering.
const test = require('tape');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const sharp = require('sharp');
const evit = require('../dist');
const { fixture, golden, tinyModel, tinyOptions } = require('./helpers/fixtures');

const { patchMasks, renderMasks, PATCH_KEPT, PATCH_FUSED, PATCH_DROPPED } = evit;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'evit-visualize-test-'));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));
const cli = path.join(__dirname, '..', 'dist', 'cli.js');
const example = path.join(__dirname, '..', 'examples', 'shapes.png');

const kept = (block, rows) => ({ block, tokens: Int32Array.from(rows.flat()), shape: [rows.length, rows[0].length] });

test('masks of a hand-made reorganisation on a 2x3 grid', (t) => {
  // Block 1 keeps patches 4, 0 and fuses 1, 2, 3, 5 into token -2. Block 4 keeps the fused
  // token and patch 0 without fusing, so patch 4 is discarded. Block 7 keeps patch 0 only and
  // fuses the rest (the earlier fused token included) into -8.
  const res = { kept: [kept(1, [[4, 0, -2]]), kept(4, [[-2, 0]]), kept(7, [[0, -8]])] };
  const m = patchMasks(res, [2, 3]);
  const K = PATCH_KEPT;
  const F = PATCH_FUSED;
  const D = PATCH_DROPPED;
  t.deepEqual(m.grid, [2, 3]);
  t.equal(m.batch, 1);
  t.deepEqual(m.blocks.map((b) => b.block), [1, 4, 7]);
  t.deepEqual(Array.from(m.blocks[0].mask), [K, F, F, F, K, F], 'block 1: 0 and 4 kept, the rest fused');
  t.deepEqual(Array.from(m.blocks[1].mask), [K, F, F, F, D, F], 'block 4: the kept fused token carries its patches, 4 is gone');
  t.deepEqual(Array.from(m.blocks[2].mask), [K, F, F, F, D, F], 'block 7: fused again, 4 stays gone');
  t.deepEqual(m.blocks[1].counts, [{ kept: 1, fused: 4, dropped: 1 }]);
  t.deepEqual(m.blocks[0].shape, [1, 2, 3]);
  t.end();
});

test('masks of a batch are per image', (t) => {
  const res = { kept: [kept(0, [[0, 1], [3, 2]])] };
  const m = patchMasks(res, [2, 2]);
  t.deepEqual(Array.from(m.blocks[0].mask), [1, 1, 0, 0, 0, 0, 1, 1]);
  t.deepEqual(m.blocks[0].counts.map((c) => c.kept), [2, 2]);
  t.end();
});

test('origins that no reorganisation could produce are typed errors', (t) => {
  const cases = [
    [[kept(2, [[0, 9]])], /patch 9.*does not exist/],
    [[kept(2, [[0, 0]])], /origin 0 twice/],
    [[kept(2, [[0, 1]]), kept(5, [[2]])], /patch 2, which was not a token entering that block/],
    [[kept(2, [[0, -1]])], /token fused at block 0/],
    [[kept(5, [[0]]), kept(2, [[0]])], /ascending block order/],
    [[{ block: 1, tokens: [0, 1], shape: [1, 2] }], /Int32Array/],
  ];
  for (const [k, re] of cases) {
    try {
      patchMasks({ kept: k }, [3, 3]);
      t.fail(`accepted ${re}`);
    } catch (err) {
      t.equal(err.code, 'EVIT_BAD_INPUT', err.message);
      t.match(err.message, re);
    }
  }
  t.throws(() => patchMasks({ kept: [] }, [0, 3]), (e) => e.code === 'EVIT_BAD_OPTIONS' && /grid/.test(e.message));
  t.throws(() => patchMasks(null, [3, 3]), (e) => e.code === 'EVIT_BAD_INPUT');
  t.end();
});

test('masks of the fixture model match its reference kept tokens', async (t) => {
  const model = await evit.loadModel(tinyModel, tinyOptions);
  const input = await evit.readNpy(fixture('input-224.npy'));
  for (const name of ['keep0.7-fused', 'keep0.7-nofuse', 'keep0.5-fused']) {
    const want = golden.cases.find((c) => c.name === name);
    const out = await model.forward(input, { keepRate: want.keepRate, dropLoc: want.dropLoc, fuse: want.fuse });
    const m = patchMasks(out, [14, 14]);
    t.deepEqual(m.blocks.map((b) => b.block), want.dropLoc, `${name}: one mask per dropping block`);
    want.kept.forEach((k, j) => {
      for (let b = 0; b < want.kept[0].tokens.length; b++) {
        // Straight from the definitions: a patch still a token of its own is kept; with fusion at
        // every dropping block nothing is lost (dropped tokens, fused ones included, are fused
        // again), so every other patch is fused; without fusion every other patch is gone.
        const own = new Set(k.tokens[b].filter((o) => o >= 0));
        const expected = Array.from({ length: 196 }, (_, p) => (own.has(p) ? PATCH_KEPT : want.fuse ? PATCH_FUSED : PATCH_DROPPED));
        t.deepEqual(Array.from(m.blocks[j].mask.subarray(b * 196, (b + 1) * 196)), expected, `${name} block ${k.block} image ${b}`);
        t.equal(m.blocks[j].counts[b].kept, own.size);
      }
    });
  }
  model.dispose();
  t.end();
});

/** Expected 8-bit value of `base` under an overlay of `color` [r, g, b, a]. */
const over = (base, color, c) => base * (1 - color[3] / 255) + color[c] * (color[3] / 255);

test('rendering: one panel per dropping block, overlays on the right patches', async (t) => {
  // A flat grey 300x200 image: resized to 256 on its shorter side, then cropped to 224.
  const grey = [120, 130, 140];
  const img = await sharp({ create: { width: 300, height: 200, channels: 3, background: { r: grey[0], g: grey[1], b: grey[2] } } }).png().toBuffer();
  const res = { kept: [kept(0, [[0, 5, -1]]), kept(1, [[5]])] }; // 4x4 grid
  const masks = patchMasks(res, [4, 4]);
  const dropped = [10, 20, 30, 200];
  const fused = [250, 0, 100, 100];
  const r = await renderMasks(img, masks, { imgSize: 224, resizeSize: 256 }, { gap: 6, droppedColor: dropped, fusedColor: fused });
  t.deepEqual([r.width, r.height, r.panel], [3 * 224 + 2 * 6, 224, 224]);
  const { data, info } = await sharp(r.png).raw().toBuffer({ resolveWithObject: true });
  t.deepEqual([info.width, info.height, info.format], [r.width, r.height, 'raw'], 'the PNG decodes to the reported size');
  const px = (x, y) => Array.from(data.subarray((y * info.width + x) * info.channels, (y * info.width + x) * info.channels + 3));
  const near = (got, want, what) => t.ok(got.every((v, c) => Math.abs(v - want[c]) <= 2), `${what}: ${got} ≈ ${want.map((v) => v.toFixed(1))}`);
  const centre = (panel, p) => [panel * (224 + 6) + (p % 4) * 56 + 28, Math.floor(p / 4) * 56 + 28];
  for (let p = 0; p < 16; p++) near(px(...centre(0, p)), grey, `input panel, patch ${p}`);
  for (const p of [0, 5]) near(px(...centre(1, p)), grey, `block 0 keeps patch ${p}`);
  near(px(...centre(1, 7)), grey.map((g, c) => over(g, fused, c)), 'block 0 fuses patch 7');
  near(px(...centre(2, 5)), grey, 'block 1 keeps patch 5');
  for (const p of [0, 7, 15]) near(px(...centre(2, p)), grey.map((g, c) => over(g, dropped, c)), `block 1 drops patch ${p}`);
  // Patch edges: the last column of patch 4 (x = 55) is dropped, the first of patch 5 (x = 56) is not.
  near(px(2 * 230 + 55, 56 + 10), grey.map((g, c) => over(g, dropped, c)), 'edge pixel left of patch 5');
  near(px(2 * 230 + 56, 56 + 10), grey, 'first pixel of patch 5');
  near(px(224 + 2, 10), [255, 255, 255], 'the gap is white');
  t.end();
});

test('visualize runs the model and renders what it kept', async (t) => {
  const model = await evit.loadModel(tinyModel, tinyOptions);
  const v = await evit.visualize(model, example, { keepRate: 0.5, fuse: false });
  t.deepEqual(v.masks.blocks.map((b) => b.counts[0].kept), [98, 49, 25], 'ceil(0.5·196), ceil(0.5·98), ceil(0.5·49)');
  t.deepEqual(v.masks.blocks.map((b) => b.counts[0].fused), [0, 0, 0]);
  const meta = await sharp(v.png).metadata();
  t.deepEqual([meta.format, meta.width, meta.height], ['png', 4 * 224 + 3 * 4, 224]);
  const dense = await evit.visualize(model, example, { keepRate: 1 });
  t.equal(dense.masks.blocks.length, 0, 'dense: no masks');
  t.equal(dense.width, 224, 'dense: the input panel only');
  const failure = (p) => p.then(() => null, (e) => e);
  const notImage = await failure(evit.visualize(model, path.join(__dirname, 'run.js')));
  t.equal(notImage?.code, 'EVIT_BAD_INPUT', 'a file that is not an image');
  const badScale = await failure(evit.visualize(model, example, { scale: 0 }));
  t.equal(badScale?.code, 'EVIT_BAD_OPTIONS', 'scale 0');
  t.match(badScale?.message ?? '', /scale/);
  model.dispose();
  t.end();
});

test('evit visualize writes the PNG and reports the counts', (t) => {
  const out = path.join(tmp, 'mask.png');
  const run = (args) => spawnSync(process.execPath, [cli, 'visualize', ...args], { encoding: 'utf8' });
  const r = run(['--weights', tinyModel, '--heads', '3', '--keep-rate', '0.7', '--out', out, example]);
  t.equal(r.status, 0, r.stderr);
  // Block 3 drops first: ceil(0.7·196) = 138 patches stay, the other 58 go into its fused token.
  t.match(r.stdout, /after block 3: 138 patches kept, 58 fused, 0 dropped/);
  const nine = /after block 9: (\d+) patches kept, (\d+) fused, 0 dropped/.exec(r.stdout);
  t.ok(nine && Number(nine[1]) + Number(nine[2]) === 196 && Number(nine[1]) <= 70, 'block 9: at most 70 patches of its own, every other one fused');
  const png = fs.readFileSync(out);
  t.equal(png.readUInt32BE(16), 4 * 224 + 3 * 4, 'IHDR width');
  t.equal(png.readUInt32BE(20), 224, 'IHDR height');
  const j = run(['--weights', tinyModel, '--heads', '3', '--no-fuse', '--scale', '2', '--gap', '0', '--json', '--out', out, example]);
  t.equal(j.status, 0, j.stderr);
  const parsed = JSON.parse(j.stdout);
  t.deepEqual([parsed.width, parsed.height, parsed.grid], [4 * 448, 448, [14, 14]]);
  t.equal(parsed.blocks[2].mask.filter((v) => v === PATCH_KEPT).length, 68);
  t.equal(run(['--weights', tinyModel, example]).status, 2, 'missing --out is a usage error');
  const bad = run(['--weights', tinyModel, '--heads', '3', '--out', path.join(tmp, 'no', 'such', 'dir.png'), example]);
  t.equal(bad.status, 2);
  t.match(bad.stderr, /cannot write --out/);
  t.end();
});
