'use strict';
// `evit convert` and `evit inspect`, through the command line as users run them.
const test = require('tape');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { loadModel, readNpy, readSafetensors, OptionsError } = require('../dist');
const { readCheckpoint } = require('../dist/weights/checkpoint');
const { toSafetensors } = require('../dist/commands/convert');

const cli = path.join(__dirname, '..', 'dist', 'cli.js');
const run = (...args) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' });
const fx = (name) => path.join(__dirname, 'fixtures', 'pth', name);
const golden = require('./fixtures/pth/golden.json');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'evit-convert-'));
const out = (name) => path.join(tmp, name);

test('convert writes the same tensors, names and the training schedule as metadata', async (t) => {
  const r = run('convert', fx('deit-mini.pth'), out('deit.safetensors'));
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /wrote .*deit\.safetensors: 56 tensors \(F32\)/);
  const src = await readCheckpoint(fx('deit-mini.pth'));
  const st = await readSafetensors(out('deit.safetensors'));
  t.deepEqual([...st.tensors.keys()], [...src.tensors.keys()], 'names and order kept');
  const same = [...src.tensors].every(([n, a]) => Buffer.from(a.data.buffer, a.data.byteOffset, a.data.byteLength)
    .equals(Buffer.from(st.tensors.get(n).data.buffer, st.tensors.get(n).data.byteOffset, st.tensors.get(n).data.byteLength)));
  t.ok(same, 'F32 data bit-identical');
  t.deepEqual(st.metadata, { format: 'pt', 'evit.keep_rate': '0.7', 'evit.drop_loc': '1,2', 'evit.fuse': 'true' });

  const x = await readNpy(fx(golden.input));
  const a = await loadModel(out('deit.safetensors'), { numHeads: 2, card: false });
  const b = await loadModel(fx('deit-mini.pth'), { numHeads: 2, card: false });
  t.deepEqual(a.schedule, b.schedule, 'the converted file loads with the schedule of the .pth');
  const [ra, rb] = [await a.forward(x), await b.forward(x)];
  t.ok(Buffer.from(ra.logits.buffer).equals(Buffer.from(rb.logits.buffer)), 'bit-identical logits');
  a.dispose();
  b.dispose();
  t.end();
});

test('convert --dtype rounds every tensor to F16 or BF16 to nearest', async (t) => {
  const src = await readCheckpoint(fx('deit-mini.pth'));
  for (const [flag, dtype, bits] of [['f16', 'F16', 11], ['bf16', 'BF16', 8]]) {
    const file = out(`deit-${flag}.safetensors`);
    const r = run('convert', '--dtype', flag, fx('deit-mini.pth'), file);
    t.equal(r.status, 0, r.stderr);
    const st = await readSafetensors(file);
    t.deepEqual([...new Set(st.dtypes.values())], [dtype]);
    // Round to nearest: relative error at most half an ulp, 2^-bits (normal numbers above 2^-14).
    let worst = 0;
    for (const [n, a] of src.tensors) {
      const b = st.tensors.get(n).data;
      a.data.forEach((v, i) => {
        if (Math.abs(v) > 2 ** -14) worst = Math.max(worst, Math.abs(b[i] - v) / Math.abs(v));
      });
    }
    t.ok(worst <= 2 ** -bits && worst > 0, `${dtype}: worst relative rounding ${worst.toExponential(2)} <= 2^-${bits}`);
    t.ok(fs.statSync(file).size < fs.statSync(out('deit.safetensors')).size * 0.6, `${dtype} file about half the F32 size`);
  }
  t.end();
});

test('convert refuses values F16 cannot hold, and bad arguments, with the documented exit codes', async (t) => {
  const ckpt = await readCheckpoint(fx('deit-mini.pth'));
  const head = ckpt.tensors.get('head.bias');
  ckpt.tensors.set('head.bias', { shape: head.shape, data: Float32Array.from(head.data, (v, i) => (i === 2 ? 1e5 : v)) });
  t.throws(() => toSafetensors(ckpt, 'big.pth', { dtype: 'F16' }),
    (e) => e instanceof OptionsError && /head\.bias holds 100000, beyond the F16 range/.test(e.message));
  t.ok(toSafetensors(ckpt, 'big.pth', { dtype: 'BF16' }).length > 0, 'BF16 holds it');

  let r = run('convert', '--dtype', 'f8', fx('deit-mini.pth'), out('x.safetensors'));
  t.equal(r.status, 2, 'unknown dtype: usage error');
  t.match(r.stderr, /--dtype must be f32, f16 or bf16, got "f8"/);
  r = run('convert', fx('deit-mini.pth'));
  t.equal(r.status, 2, 'missing OUT');
  r = run('convert', fx('deit-mini.pth'), fx('deit-mini.pth'));
  t.equal(r.status, 2, 'OUT = IN');
  t.match(r.stderr, /would overwrite its input/);
  r = run('convert', fx('views.pth'), out('views.safetensors'));
  t.equal(r.status, 1, 'not a model');
  t.match(r.stderr, /not converted: missing tensor cls_token \[EVIT_BAD_WEIGHTS\]/);
  t.notOk(fs.existsSync(out('views.safetensors')), 'nothing written');
  r = run('convert', '--drop-loc', '2,9', fx('deit-mini.pth'), out('y.safetensors'));
  t.equal(r.status, 2, 'a schedule that does not fit the model');
  t.match(r.stderr, /dropLoc entry 9 is out of range/);
  r = run('convert', '--key', 'optimizer', fx('deit-mini.pth'), out('z.safetensors'));
  t.equal(r.status, 1);
  t.match(r.stderr, /"optimizer" is not a state dict/);
  r = run('convert', path.join(tmp, 'absent.pth'), out('z.safetensors'));
  t.equal(r.status, 1);
  t.match(r.stderr, /checkpoint file not found/);
  t.end();
});

test('convert records --arch, --keep-rate, --drop-loc and --no-fuse over the checkpoint args', async (t) => {
  const r = run('convert', '--keep-rate', '0.5', '--drop-loc', '2', '--no-fuse', fx('deit-mini.pth'), out('sched.safetensors'));
  t.equal(r.status, 0, r.stderr);
  const st = await readSafetensors(out('sched.safetensors'));
  t.deepEqual(st.metadata, { format: 'pt', 'evit.keep_rate': '0.5', 'evit.drop_loc': '2', 'evit.fuse': 'false' });
  const bad = run('convert', '--arch', 'deit_huge', fx('deit-mini.pth'), out('arch.safetensors'));
  t.equal(bad.status, 2);
  t.match(bad.stderr, /unknown arch "deit_huge"/);
  // An arch the tensors contradict would not load: refused, as loadModel would refuse it.
  const wrong = run('convert', '--arch', 'deit_tiny_patch16_224', fx('deit-mini.pth'), out('wrong-arch.safetensors'));
  t.equal(wrong.status, 1, 'an arch that does not fit the tensors');
  t.match(wrong.stderr, /not converted: checkpoint does not match arch deit_tiny_patch16_224: embed dim \d+ \(expected 192\)/);
  t.notOk(fs.existsSync(out('wrong-arch.safetensors')), 'nothing written');
  t.end();
});

test('inspect describes .pth and safetensors checkpoints, as text and as JSON', (t) => {
  let r = run('inspect', '--json', fx('deit3-mini-timm.pth'));
  t.equal(r.status, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  t.equal(j.format, 'pth');
  t.equal(j.stateDictKey, null);
  t.equal(j.variant, 'deit3');
  t.equal(j.layerScale, 'ls1.gamma/ls2.gamma');
  t.equal(j.posEmbedClassSlot, false);
  const m = golden.model;
  t.deepEqual(
    [j.architecture.embedDim, j.architecture.depth, j.architecture.patchSize, j.architecture.gridSize, j.architecture.imgSize, j.architecture.numClasses, j.architecture.mlpHidden],
    [m.embedDim, m.depth, m.patchSize, [4, 4], m.imgSize, m.numClasses, m.mlpHidden],
  );
  t.equal(j.architecture.numHeads, null, 'heads cannot be told from the tensors of an unnamed model');
  // 4 + 16 per block (12 DeiT tensors + 2 gammas ... see below) counted independently from the shapes:
  const C = m.embedDim;
  const H = m.mlpHidden;
  const perBlock = 2 * C + (3 * C * C + 3 * C) + (C * C + C) + 2 * C + (H * C + H) + (C * H + C) + 2 * C;
  const params = C + 16 * C + (C * 3 * 8 * 8 + C) + m.depth * perBlock + 2 * C + (m.numClasses * C + m.numClasses);
  t.equal(j.tensors, 8 + 14 * m.depth, 'tensor count');
  t.equal(j.parameters, params, 'parameter count');
  t.deepEqual(j.dtypes, { F32: j.tensors });
  t.equal(j.tensorBytes, 4 * params);

  r = run('inspect', fx('deit3-mini.pth'));
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /state dict under "model"/);
  t.match(r.stdout, /DeiT III \(LayerScale gamma_1\/gamma_2, position embedding without a class-token slot\)/);
  t.match(r.stdout, /embed 16, depth 4, heads unknown .* patch 8, grid 4x4 \(32 px\), 5 classes, MLP 64/);

  r = run('inspect', path.join(__dirname, 'fixtures', 'tiny-evit.safetensors'));
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /\(safetensors\)/);
  t.match(r.stdout, /variant: +DeiT\n/);
  t.match(r.stdout, /tensors: +152 \(F32\)/);

  r = run('inspect', '--json', fx('views.pth'));
  t.equal(r.status, 0, 'a checkpoint that is no model is still described');
  const v = JSON.parse(r.stdout);
  t.equal(v.architecture, null);
  t.match(v.architectureError, /missing tensor cls_token/);
  t.deepEqual(v.skipped, [{ name: 'long', dtype: 'I64', shape: [3] }]);

  r = run('inspect', path.join(tmp, 'absent.pth'));
  t.equal(r.status, 1);
  t.match(r.stderr, /checkpoint file not found/);
  r = run('inspect');
  t.equal(r.status, 2, 'usage error without FILE');
  t.end();
});

test('cleanup', (t) => {
  fs.rmSync(tmp, { recursive: true, force: true });
  t.end();
});
