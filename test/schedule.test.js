'use strict';
const test = require('tape');
const { keepSchedule, OptionsError } = require('../dist');

test('token counts match the SPEC §1 table at 224 px', (t) => {
  const table = [
    [0.9, true, [178, 162, 147]],
    [0.9, false, [177, 160, 144]],
    [0.7, true, [139, 99, 71]],
    [0.7, false, [138, 97, 68]],
    [0.5, true, [99, 51, 27]],
    [0.5, false, [98, 49, 25]],
  ];
  for (const [keepRate, fuse, want] of table) {
    const s = keepSchedule(12, 196, { keepRate, fuse });
    t.deepEqual([3, 6, 9].map((b) => s.tokenCounts[b]), want, `keep ${keepRate} ${fuse ? 'fused' : 'not fused'}`);
    t.deepEqual(s.dropBlocks, [3, 6, 9]);
    t.equal(s.keep[3], fuse ? want[0] - 1 : want[0], 'keep count of block 3 excludes the fused token');
    t.equal(s.fuse[3], fuse ? 1 : 0);
    t.equal(s.keep[0], -1, 'non-dropping blocks are dense');
  }
  t.end();
});

test('defaults are keep 0.7, blocks 3/6/9, fusion on', (t) => {
  const s = keepSchedule(12, 196);
  t.equal(s.keepRate, 0.7);
  t.deepEqual(s.dropBlocks, [3, 6, 9]);
  t.equal(s.fused, true);
  t.deepEqual(s.tokenCounts.slice(0, 4), [196, 196, 196, 139]);
  t.end();
});

test('keep rate 1 and blocks that would keep everything run dense', (t) => {
  const dense = keepSchedule(12, 196, { keepRate: 1 });
  t.deepEqual(dense.dropBlocks, []);
  t.ok(dense.keep.every((k) => k === -1));
  // ceil(0.999 * 196) = 196 = N - 1: nothing dropped, as in the reference.
  t.deepEqual(keepSchedule(12, 196, { keepRate: 0.999 }).dropBlocks, []);
  t.end();
});

test('ceil is taken in float64', (t) => {
  // 0.7 * 139 = 97.3 → 98; 0.7 * 99 = 69.29999999999998 → 70 (not 69.3 rounded down).
  const s = keepSchedule(12, 196, { keepRate: 0.7, fuse: true });
  t.equal(s.keep[6], 98);
  t.equal(s.keep[9], 70);
  t.end();
});

test('explicit keep counts', (t) => {
  const s = keepSchedule(12, 196, { dropLoc: [2, 5], keepCounts: [100, 1], fuse: false });
  t.deepEqual(s.dropBlocks, [2, 5]);
  t.equal(s.keep[2], 100);
  t.equal(s.keep[5], 1);
  t.equal(s.tokenCounts[11], 1);
  const full = keepSchedule(12, 196, { dropLoc: [0], keepCounts: [196] });
  t.deepEqual(full.dropBlocks, [], 'keeping all N-1 tokens is no reorganisation');
  t.end();
});

test('a fused token is an ordinary token afterwards', (t) => {
  // With fusion, N - 1 after block 0 is k + 1, so block 1 chooses among k + 1 tokens.
  const s = keepSchedule(4, 10, { dropLoc: [0, 1], keepCounts: [5, 4], fuse: true });
  t.deepEqual(s.tokenCounts, [6, 5, 5, 5]);
  t.throws(() => keepSchedule(4, 10, { dropLoc: [0, 1], keepCounts: [5, 7], fuse: true }), /\[1, 6\]/, 'the bound counts the fused token');
  t.deepEqual(keepSchedule(2, 10, { dropLoc: [0, 1], keepRate: 0.5 }).tokenCounts, [6, 4]);
  t.end();
});

test('bad schedules give OptionsError naming the problem', (t) => {
  const bad = [
    [{ keepRate: 0 }, /keepRate must be a number in \(0, 1\]/],
    [{ keepRate: -0.5 }, /keepRate/],
    [{ keepRate: 1.01 }, /keepRate/],
    [{ keepRate: NaN }, /keepRate/],
    [{ keepRate: '0.7' }, /keepRate/],
    [{ dropLoc: [3, 12] }, /dropLoc entry 12 is out of range: the model has blocks 0..11/],
    [{ dropLoc: [-1] }, /dropLoc entry -1/],
    [{ dropLoc: [1.5] }, /dropLoc entry 1.5/],
    [{ dropLoc: [3, 3] }, /lists block 3 twice/],
    [{ dropLoc: 3 }, /dropLoc must be an array/],
    [{ keepCounts: [1, 2] }, /one entry per dropLoc entry \(3\)/],
    [{ dropLoc: [0], keepCounts: [197] }, /keepCounts for block 0 must be an integer in \[1, 196\]/],
    [{ dropLoc: [0], keepCounts: [0] }, /keepCounts for block 0/],
    [{ keepRate: 0.5, keepCounts: [1, 1, 1] }, /either keepRate or keepCounts/],
    [{ fuse: 'yes' }, /fuse must be a boolean/],
  ];
  for (const [opts, re] of bad) {
    try {
      keepSchedule(12, 196, opts);
      t.fail(`accepted ${JSON.stringify(opts)}`);
    } catch (err) {
      t.ok(err instanceof OptionsError && err.code === 'EVIT_BAD_OPTIONS', `${JSON.stringify(opts)}: OptionsError`);
      t.match(err.message, re, err.message);
    }
  }
  t.end();
});
