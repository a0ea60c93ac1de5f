'use strict';
// The CPU backend against the float64 reference of SPEC §1 (tools/reference).
const test = require('tape');
const { loadModel, readNpy } = require('../dist');
const { fixture, golden, tinyModel, tinyOptions } = require('./helpers/fixtures');

const LOGIT_TOL = 1e-4; // SPEC §4: absolute, after the head

for (const c of golden.cases) {
  test(`parity with the float64 reference: ${c.name}`, async (t) => {
    const model = await loadModel(tinyModel, {
      ...tinyOptions,
      imgSize: c.imgSize,
      keepRate: c.keepRate,
      dropLoc: c.dropLoc,
      fuse: c.fuse,
    });
    const input = await readNpy(fixture(c.input));
    const out = await model.forward(input);
    const B = input.shape[0];
    t.deepEqual(out.shape, [B, golden.model.numClasses], 'logits shape');

    let maxDiff = 0;
    c.logits.flat().forEach((v, i) => {
      maxDiff = Math.max(maxDiff, Math.abs(v - out.logits[i]));
    });
    t.ok(maxDiff <= LOGIT_TOL, `logits within ${LOGIT_TOL} (max diff ${maxDiff.toExponential(2)})`);

    const dropBlocks = c.kept.map((k) => k.block);
    t.deepEqual(out.kept.map((k) => k.block), dropBlocks, 'reorganising blocks');
    t.deepEqual(dropBlocks.map((b) => out.schedule.tokenCounts[b]), c.kept.length ? c.tokenCounts : [], 'token counts');
    c.kept.forEach((k, j) => {
      const got = out.kept[j];
      t.deepEqual(got.shape, [B, k.tokens[0].length], `block ${k.block} kept shape`);
      for (let b = 0; b < B; b++) {
        const row = Array.from(got.tokens.subarray(b * got.shape[1], (b + 1) * got.shape[1]));
        t.deepEqual(row, k.tokens[b], `block ${k.block} image ${b}: kept tokens and order identical`);
      }
    });
    model.dispose();
  });
}

test('a batch gives the same logits as its images run one at a time', async (t) => {
  const model = await loadModel(tinyModel, { ...tinyOptions, keepRate: 0.7 });
  const input = await readNpy(fixture('input-224.npy'));
  const whole = await model.forward(input);
  const per = input.data.length / input.shape[0];
  for (let b = 0; b < input.shape[0]; b++) {
    const one = await model.forward({ data: input.data.slice(b * per, (b + 1) * per), shape: [1, ...input.shape.slice(1)] });
    let maxDiff = 0;
    for (let i = 0; i < 10; i++) maxDiff = Math.max(maxDiff, Math.abs(one.logits[i] - whole.logits[b * 10 + i]));
    t.ok(maxDiff < 1e-5, `image ${b}: batch vs single max diff ${maxDiff.toExponential(2)}`);
    for (const [j, k] of one.kept.entries()) {
      const w = whole.kept[j];
      t.deepEqual(Array.from(k.tokens), Array.from(w.tokens.subarray(b * w.shape[1], (b + 1) * w.shape[1])), `image ${b} block ${k.block} kept`);
    }
  }
  model.dispose();
});

test('fused tokens are reported as -1-L and may be kept by later blocks', async (t) => {
  const model = await loadModel(tinyModel, { ...tinyOptions, keepRate: 0.5, fuse: true });
  const input = await readNpy(fixture('input-224.npy'));
  const out = await model.forward(input);
  const [b3, b6, b9] = out.kept;
  const P = 196;
  for (const k of out.kept) {
    const n = k.shape[1];
    for (let b = 0; b < k.shape[0]; b++) {
      const row = Array.from(k.tokens.subarray(b * n, (b + 1) * n));
      t.equal(row[n - 1], -1 - k.block, `block ${k.block} image ${b}: fused token last, origin ${-1 - k.block}`);
      const patches = row.slice(0, -1);
      t.ok(patches.every((o) => (o >= 0 && o < P) || o === -4 || o === -7), 'other origins are patches or earlier fused tokens');
      t.equal(new Set(patches).size, patches.length, 'no origin repeats');
    }
  }
  // Tokens kept later are a subset of those alive after the previous block.
  for (const [prev, next] of [[b3, b6], [b6, b9]]) {
    const alive = new Set(prev.tokens.subarray(0, prev.shape[1]));
    const kept = Array.from(next.tokens.subarray(0, next.shape[1] - 1));
    t.ok(kept.every((o) => alive.has(o)), `block ${next.block} keeps only tokens alive after block ${prev.block}`);
  }
  model.dispose();
});
