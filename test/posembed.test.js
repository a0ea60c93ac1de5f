'use strict';
const test = require('tape');
const path = require('node:path');
const fs = require('node:fs');
const { resizePosEmbed } = require('../dist/weights/posEmbed');
const { WeightsError, OptionsError } = require('../dist/errors');

const FIXTURE = path.join(__dirname, 'fixtures', 'posembed-resize.json');

/** Deterministic pseudo-random pos_embed of (1 + h*w) * c values. */
function randomPos(h, w, c, seed = 1) {
  let s = seed >>> 0;
  const out = new Float32Array((1 + h * w) * c);
  for (let i = 0; i < out.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s / 2 ** 32 - 0.5;
  }
  return out;
}

function maxAbsDiff(a, b) {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

test('same size returns an exact copy', (t) => {
  const pos = randomPos(14, 14, 6);
  const out = resizePosEmbed(pos, 6, [14, 14], [14, 14]);
  t.deepEqual(Array.from(out), Array.from(pos), 'identical values');
  t.notEqual(out, pos, 'a new array');
  out[0] = 42;
  t.notEqual(pos[0], 42, 'not aliased');
  t.end();
});

test('class-token row is unchanged, output has the new size', (t) => {
  const C = 5;
  const pos = randomPos(14, 14, C, 7);
  for (const to of [[16, 16], [7, 7], [20, 12], [1, 1]]) {
    const out = resizePosEmbed(pos, C, [14, 14], to);
    t.equal(out.length, (1 + to[0] * to[1]) * C, `length for ${to}`);
    t.deepEqual(Array.from(out.subarray(0, C)), Array.from(pos.subarray(0, C)), `class token unchanged for ${to}`);
  }
  t.end();
});

test('a constant grid stays constant', (t) => {
  const C = 3;
  const pos = new Float32Array((1 + 14 * 14) * C);
  for (let i = C; i < pos.length; i++) pos[i] = [0.25, -1.5, 3][i % C];
  pos[0] = 9;
  const out = resizePosEmbed(pos, C, [14, 14], [24, 17]);
  let worst = 0;
  for (let i = C; i < out.length; i++) worst = Math.max(worst, Math.abs(out[i] - [0.25, -1.5, 3][i % C]));
  t.ok(worst < 1e-6, `max deviation ${worst}`);
  t.equal(out[0], 9, 'class token');
  t.end();
});

test('a linear ramp stays close to linear in the interior', (t) => {
  // Value = row + 2*col in grid coordinates; upsampling 8x8 -> 16x16 maps
  // output (y, x) to source ((y + 0.5) / 2 - 0.5, (x + 0.5) / 2 - 0.5).
  // Cubic convolution with A = -0.75 reproduces a ramp only approximately: at
  // the phases 0.25 / 0.75 of a 2x upsampling the bias is +-3/64 of the slope
  // per axis, so the deviation here is at most 3/64 * (1 + 2).
  const h = 8, w = 8, h2 = 16, w2 = 16;
  const pos = new Float32Array(1 + h * w);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) pos[1 + y * w + x] = y + 2 * x;
  const out = resizePosEmbed(pos, 1, [h, w], [h2, w2]);
  const at = (y, x) => out[1 + y * w2 + x];
  let worst = 0;
  let monotone = true;
  // Interior: all four taps inside the grid, away from the clamped edges.
  for (let y = 3; y < h2 - 3; y++) {
    for (let x = 3; x < w2 - 3; x++) {
      const sy = (y + 0.5) * (h / h2) - 0.5;
      const sx = (x + 0.5) * (w / w2) - 0.5;
      worst = Math.max(worst, Math.abs(at(y, x) - (sy + 2 * sx)));
      if (!(at(y, x + 1) > at(y, x) && at(y + 1, x) > at(y, x))) monotone = false;
    }
  }
  t.ok(worst <= (3 / 64) * 3 + 1e-6, `interior deviation from linear ${worst} <= ${(3 / 64) * 3}`);
  t.ok(monotone, 'strictly increasing along rows and columns');
  // Over a whole period of the phases the bias cancels: mean slope is exact.
  const slopeX = (at(8, 11) - at(8, 3)) / 4;
  const slopeY = (at(11, 8) - at(3, 8)) / 4;
  t.ok(Math.abs(slopeX - 2) < 1e-5 && Math.abs(slopeY - 1) < 1e-5, `mean slopes ${slopeX}, ${slopeY}`);
  // At the edges clamping flattens the ramp but values stay near the input range.
  let lo = Infinity, hi = -Infinity;
  for (let i = 1; i < out.length; i++) { lo = Math.min(lo, out[i]); hi = Math.max(hi, out[i]); }
  t.ok(lo > -0.5 && hi < 21.5, `range [${lo}, ${hi}] close to [0, 21]`);
  t.end();
});

test('known values: 2x2 -> 4x4 of a single channel', (t) => {
  // torch F.interpolate(x, size=(4,4), mode='bicubic', align_corners=False)
  // on [[0,1],[2,3]]; per axis the 1-D result of [a, b] (A = -0.75, edges
  // clamped) is a + (b - a) * r, so the grid is 2 * r[y] + r[x].
  const r = [-0.10546875, 0.2265625, 0.7734375, 1.10546875];
  const pos = new Float32Array([5, 0, 1, 2, 3]);
  const out = resizePosEmbed(pos, 1, [2, 2], [4, 4]);
  const expected = [5];
  for (let y = 0; y < 4; y++) for (let x = 0; x < 4; x++) expected.push(2 * r[y] + r[x]);
  t.ok(maxAbsDiff(out, expected) < 1e-7, `max diff ${maxAbsDiff(out, expected)}`);
  t.end();
});

test('matches torch bicubic on the reference fixture', (t) => {
  if (!fs.existsSync(FIXTURE)) {
    t.fail(`fixture missing: ${FIXTURE}`);
    t.end();
    return;
  }
  const { cases } = JSON.parse(fs.readFileSync(FIXTURE, 'utf8'));
  t.ok(Array.isArray(cases) && cases.length > 0, `${cases.length} cases`);
  for (const c of cases) {
    const out = resizePosEmbed(Float32Array.from(c.input), c.channels, c.from, c.to);
    const label = `${c.from.join('x')} -> ${c.to.join('x')}, C=${c.channels}`;
    t.equal(out.length, c.output.length, `${label}: length`);
    const d = maxAbsDiff(out, c.output);
    t.ok(d <= 1e-5, `${label}: max abs diff ${d}`);
  }
  t.end();
});

test('invalid arguments', (t) => {
  const pos = randomPos(4, 4, 2);
  t.throws(() => resizePosEmbed(pos, 2, [4, 4], [0, 4]), OptionsError, 'zero target size');
  t.throws(() => resizePosEmbed(pos, 2, [4, 4], [2.5, 4]), /target grid size must be \[rows, cols\] of positive integers/, 'fractional target size');
  t.throws(() => resizePosEmbed(pos, 0, [4, 4], [2, 2]), /channels must be a positive integer/, 'zero channels');
  let err = null;
  try {
    resizePosEmbed(pos, 2, [5, 5], [2, 2]);
  } catch (e) {
    err = e;
  }
  t.ok(err instanceof WeightsError, 'length mismatch is a WeightsError');
  t.match(err && err.message, /pos_embed has 34 values, expected \(1 \+ 5\*5\) \* 2 = 52/, 'message names the sizes');
  t.end();
});
