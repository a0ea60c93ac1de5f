'use strict';
// The native side against a hostile or careless caller: buffers changed under a running pass,
// huge batches, and memory across many loads and disposals. Each risky case runs in a child
// process, so a crash fails its check instead of ending the suite.
const test = require('tape');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { tinyModel, tinyOptions } = require('./helpers/fixtures');
const { writeRandomCheckpoint } = require('./helpers/randomCheckpoint');

const dist = path.join(__dirname, '..', 'dist');

/** Runs `body` (an async function's source, given `evit`, `binding` and `model`) in a fresh Node; returns its JSON result. */
function inChild(body, args = []) {
  const src = `
    const evit = require(${JSON.stringify(dist)});
    const binding = require(${JSON.stringify(path.join(dist, 'native'))}).loadBinding();
    (async () => {
      const model = await evit.loadModel(${JSON.stringify(tinyModel)}, ${JSON.stringify(tinyOptions)});
      const result = await (${body})(evit, binding, model);
      process.stdout.write(JSON.stringify(result));
    })().catch((e) => { process.stderr.write(String(e && e.stack || e)); process.exit(3); });`;
  const r = spawnSync(process.execPath, ['--expose-gc', '-e', src, ...args], { encoding: 'utf8', timeout: 120e3 });
  return { status: r.status, signal: r.signal, stderr: r.stderr, result: r.status === 0 ? JSON.parse(r.stdout) : null };
}

const exited = (r) => `exit ${r.status}${r.signal ? ` (${r.signal})` : ''}${r.stderr ? `: ${r.stderr.slice(-400)}` : ''}`;

test('a buffer transferred or shrunk while its pass runs neither crashes the process nor changes the result', (t) => {
  const r = inChild(`async (evit, binding, model) => {
    const shape = [4, 3, 224, 224], n = 4 * 3 * 224 * 224;
    const want = Array.from((await model.forward({ data: new Float32Array(n).fill(0.5), shape })).logits);
    const same = (got) => Array.from(got.logits).every((v, i) => v === want[i]);
    const out = { transferred: [], shrunk: [], rewritten: [] };
    for (let i = 0; i < 8; i++) {
      const buf = new ArrayBuffer(n * 4);
      const p = model.forward({ data: new Float32Array(buf).fill(0.5), shape });
      const moved = structuredClone(buf, { transfer: [buf] });  // detaches buf; its memory now belongs to moved
      new Float32Array(moved).fill(NaN);
      global.gc();
      out.transferred.push(same(await p));

      const rb = new ArrayBuffer(n * 4, { maxByteLength: n * 4 });
      const q = model.forward({ data: new Float32Array(rb).fill(0.5), shape });
      rb.resize(0);  // gives the pages back
      out.shrunk.push(same(await q));

      const data = new Float32Array(n).fill(0.5);
      const w = model.forward({ data, shape });
      data.fill(1e30);
      out.rewritten.push(same(await w));
    }
    return out;
  }`);
  t.equal(r.status, 0, `the process survives: ${exited(r)}`);
  if (r.result) {
    t.ok(r.result.transferred.every(Boolean), 'transferring the input during the pass: the result is the one for the data at the call');
    t.ok(r.result.shrunk.every(Boolean), 'shrinking a resizable input to 0 during the pass: same result');
    t.ok(r.result.rewritten.every(Boolean), 'overwriting the input during the pass: same result');
  }
  t.end();
});

test('a detached input is refused with a typed error, not read', async (t) => {
  const evit = require('../dist');
  const model = await evit.loadModel(tinyModel, tinyOptions);
  const buf = new ArrayBuffer(3 * 224 * 224 * 4);
  const data = new Float32Array(buf);
  structuredClone(buf, { transfer: [buf] });
  try {
    await model.forward({ data, shape: [1, 3, 224, 224] });
    t.fail('forward accepted a detached buffer');
  } catch (err) {
    t.ok(err instanceof evit.EvitError, `${err.name} [${err.code}]: ${err.message}`);
  }
  model.dispose();
});

test('a huge batch leaves a bounded activation arena behind; dispose gives it back', (t) => {
  const r = inChild(`async (evit, binding, model) => {
    const { Model } = binding;
    const { tensors } = evit.parseSafetensors(require('node:fs').readFileSync(process.argv[1]));
    const record = {};
    for (const [name, tt] of tensors) record[name] = tt.data;
    const m = new Model({ embedDim: 48, depth: 12, numHeads: 3, patchSize: 16, inChans: 3, gridH: 14, gridW: 14,
      numClasses: 10, mlpHidden: 192 }, record);
    const keep = new Int32Array(12).fill(-1), fuse = new Uint8Array(12);
    const per = 3 * 224 * 224;
    const one = await m.forward(new Float32Array(per).fill(0.25), 1, keep, fuse);
    const afterOne = m.activationBytes;
    const B = 300;
    const big = new Float32Array(per * B).fill(0.25);
    const res = await m.forward(big, B, keep, fuse);
    const afterBig = m.activationBytes;
    const firstSame = Array.from(res.logits.subarray(0, 10)).every((v, i) => Math.abs(v - one.logits[i]) < 1e-5);
    const lastSame = Array.from(res.logits.subarray((B - 1) * 10)).every((v, i) => Math.abs(v - one.logits[i]) < 1e-5);
    m.dispose();
    return { afterOne, afterBig, firstSame, lastSame, afterDispose: m.activationBytes };
  }`, [tinyModel]);
  t.equal(r.status, 0, exited(r));
  if (r.result) {
    const { afterOne, afterBig, firstSame, lastSame, afterDispose } = r.result;
    t.ok(afterOne > 0, `one image: ${(afterOne / 2 ** 20).toFixed(1)} MiB of activations`);
    // 300 images of this model need 250 MiB at once; passes run in chunks within a 64 MiB budget.
    t.ok(afterBig <= 64 * 2 ** 20 + afterOne, `300 images: ${(afterBig / 2 ** 20).toFixed(1)} MiB held after the pass (budget 64 MiB)`);
    t.ok(firstSame && lastSame, 'the first and last images of the chunked batch match a single-image pass');
    t.equal(afterDispose, 0, 'dispose releases the arena');
  }
  t.end();
});

test('loading and disposing models many times does not grow resident memory', (t) => {
  // 7.6 MB of weights: big enough that malloc would keep freed copies in its heap.
  const file = path.join(os.tmpdir(), `evit-hostile-${process.pid}.safetensors`);
  writeRandomCheckpoint(file, { embed: 192, depth: 4, mlp: 768, classes: 100 });
  try {
    const r = inChild(`async (evit, binding, model) => {
      model.dispose();
      const rss = [];
      for (let round = 0; round < 5; round++) {
        for (let i = 0; i < 20; i++) {
          const m = await evit.loadModel(process.argv[1], { numHeads: 3, dropLoc: [1, 2] });
          const B = 1 + (i % 7);  // passes of different sizes, so the arena is resized as well
          await m.forward({ data: new Float32Array(B * 3 * 224 * 224).fill(0.1), shape: [B, 3, 224, 224] });
          m.dispose();
        }
        global.gc();
        await new Promise((r) => setTimeout(r, 50));
        rss.push(process.memoryUsage().rss);
      }
      return rss;
    }`, [file]);
    t.equal(r.status, 0, exited(r));
    if (r.result) {
      const mib = r.result.map((b) => (b / 2 ** 20).toFixed(1));
      // The first rounds warm the allocator and per-thread scratch; later rounds must not keep adding.
      const growth = (r.result[4] - r.result[2]) / 2 ** 20;
      t.ok(growth < 8, `RSS after rounds of 20 load/forward/dispose: ${mib.join(', ')} MiB (growth ${growth.toFixed(1)} MiB)`);
    }
  } finally {
    fs.rmSync(file, { force: true });
  }
  t.end();
});

test('a non-finite input is an InputError (400 in the server), non-finite weights a WeightsError naming the tensor', async (t) => {
  const evit = require('../dist');
  const model = await evit.loadModel(tinyModel, tinyOptions);
  const per = 3 * 224 * 224;
  for (const [label, v] of [['NaN', NaN], ['+Infinity', Infinity], ['-Infinity', -Infinity]]) {
    const data = new Float32Array(3 * per).fill(0.2);
    data[2 * per + 777] = v;
    try {
      await model.forward({ data, shape: [3, 3, 224, 224] });
      t.fail(`${label}: accepted`);
    } catch (err) {
      t.ok(err instanceof evit.InputError && err.code === 'EVIT_BAD_INPUT', `${label}: ${err.name} [${err.code}]`);
      t.match(err.message, /input image 2 holds a non-finite value \(.* at element 777\)/, `${label}: names the image and element`);
    }
  }
  const fine = await model.forward({ data: new Float32Array(per).fill(0.2), shape: [1, 3, 224, 224] });
  t.ok(fine.logits.every(Number.isFinite), 'a finite input still runs');
  model.dispose();

  const { tensors } = await evit.readSafetensors(tinyModel);
  const poisoned = new Map([...tensors].map(([name, tt]) => [name, { dtype: 'F32', shape: tt.shape, data: tt.data.slice() }]));
  poisoned.get('blocks.1.mlp.fc1.weight').data[42] = NaN;
  const file = path.join(os.tmpdir(), `evit-nan-${process.pid}.safetensors`);
  fs.writeFileSync(file, evit.serializeSafetensors(poisoned, { format: 'pt' }));
  try {
    await evit.loadModel(file, { ...tinyOptions, card: false });
    t.fail('weights with a NaN loaded');
  } catch (err) {
    t.ok(err instanceof evit.WeightsError, `${err.name} [${err.code}]: ${err.message}`);
    t.match(err.message, /tensor blocks\.1\.mlp\.fc1\.weight holds NaN at element 42/);
  } finally {
    fs.rmSync(file, { force: true });
  }
});
