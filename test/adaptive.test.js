'use strict';
// The adaptive keep-rate policy on its own, driven with explicit delays and clock values.
const test = require('tape');
const { AdaptiveKeepPolicy, OptionsError } = require('../dist');

test('steps down while the delay stays over the target, and back up once it falls', (t) => {
  const p = new AdaptiveKeepPolicy({ rates: [0.9, 0.7, 0.5], targetMs: 50, lowWater: 0.5, patience: 3, holdMs: 100 });
  const seen = [];
  p.onChange((c) => seen.push(`${c.from}->${c.to}`));
  let now = 0;
  const feed = (delay, n, dt = 10) => {
    const rates = [];
    for (let i = 0; i < n; i++) rates.push(p.observe(delay, (now += dt)));
    return rates;
  };
  t.equal(p.keepRate, 0.9, 'starts at the most accurate rate');
  t.deepEqual(feed(80, 2), [0.9, 0.9], 'two slow batches: not yet (patience 3)');
  t.deepEqual(feed(80, 1), [0.7], 'third slow batch: one step down');
  t.deepEqual(feed(80, 3), [0.7, 0.7, 0.7], 'still slow but within holdMs of the last step: hold');
  // Last step at t=30; slow batches keep counting during the hold, so the step comes at t=130.
  t.deepEqual(feed(80, 8), [0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.5, 0.5], 'steps again as soon as holdMs has passed');
  t.deepEqual(feed(500, 10, 100), Array(10).fill(0.5), 'never below the last rate');
  t.deepEqual(feed(40, 10, 100), Array(10).fill(0.5), 'between lowWater·target and target: no change either way');
  t.deepEqual(feed(10, 3, 100), [0.5, 0.5, 0.7], 'fast again: up one step after three fast batches');
  t.deepEqual(feed(10, 3, 100), [0.7, 0.7, 0.9], 'and up again');
  t.deepEqual(feed(0, 5, 100), Array(5).fill(0.9), 'never above the first rate');
  t.deepEqual(seen, ['0.9->0.7', '0.7->0.5', '0.5->0.7', '0.7->0.9'], 'listeners saw every step');
  t.deepEqual(p.changes.map((c) => c.to), [0.7, 0.5, 0.7, 0.9], 'history records every step');
  t.end();
});

test('a single fast batch in a slow run resets the count', (t) => {
  const p = new AdaptiveKeepPolicy({ targetMs: 20, patience: 3, holdMs: 0 });
  let now = 0;
  for (const d of [30, 30, 5, 30, 30]) p.observe(d, (now += 1));
  t.equal(p.keepRate, 0.9, 'no three slow batches in a row: no step');
  p.observe(30, (now += 1));
  t.equal(p.keepRate, 0.7, 'three in a row: step');
  t.equal(p.observe(Number.NaN, (now += 1)), 0.7, 'a non-finite delay is ignored');
  t.end();
});

test('invalid policy options are OptionsErrors naming the option', (t) => {
  const bad = [
    [{ rates: [0.9] }, /at least two/],
    [{ rates: [0.5, 0.7] }, /strictly decreasing/],
    [{ rates: [1.2, 0.7] }, /rates\[0\] must be in \(0, 1\]/],
    [{ rates: [0.9, 0] }, /rates\[1\]/],
    [{ targetMs: 0 }, /targetMs/],
    [{ targetMs: -5 }, /targetMs/],
    [{ lowWater: 1 }, /lowWater/],
    [{ patience: 0 }, /patience/],
    [{ patience: 1.5 }, /patience/],
    [{ holdMs: -1 }, /holdMs/],
  ];
  for (const [opts, re] of bad) {
    try {
      new AdaptiveKeepPolicy(opts);
      t.fail(`${JSON.stringify(opts)} accepted`);
    } catch (err) {
      t.ok(err instanceof OptionsError && re.test(err.message), `${JSON.stringify(opts)}: ${err.message}`);
    }
  }
  t.end();
});
