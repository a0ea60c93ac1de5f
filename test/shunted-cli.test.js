'use strict';
// Every `evit` command on a Shunted Transformer fixture, as a user runs them: inspect describes
// it, classify matches the float64 goldens, convert writes a safetensors file that loads the
// same, serve answers over HTTP (a real client against the real server), visualize refuses.
const test = require('tape');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawn, spawnSync } = require('node:child_process');
const { golden, shuntedFixture } = require('./helpers/shuntedFixtures');
const { noisePng, request } = require('./helpers/serve');

const cli = path.join(__dirname, '..', 'dist', 'cli.js');
const run = (args) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' });
const [c0, c2] = golden.models;
const heads = (m) => m.arch.numHeads.join(',');
const input64 = path.join(__dirname, 'fixtures', 'shunted', 'input-64.npy');
const maxAbsDiff = (a, b) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'evit-shunted-cli-'));
test.onFinish(() => fs.rmSync(tmp, { recursive: true, force: true }));

test('inspect: the family, its stages and the BatchNorm counters it does not read', (t) => {
  const text = run(['inspect', shuntedFixture(c2.files['pth-bare'])]);
  t.equal(text.status, 0, text.stderr);
  t.match(text.stdout, /variant: +Shunted Transformer \(drops no tokens/, 'the family');
  t.match(text.stdout, /embed 64\/32\/16\/32, depths 1\/1\/2\/1, heads unknown \(pass --num-heads or --arch when running it\), sr ratios 2\/4\/2\/1, MLP 64\/48\/64\/64, num_conv 2, 10 classes/, 'the stages');
  t.match(text.stdout, /not read: +patch_embed1\.conv\.1\.num_batches_tracked \(I64 \[\]\)/, 'the counters');
  const json = run(['inspect', '--json', shuntedFixture(c0.files['pth-model'])]);
  t.equal(json.status, 0, json.stderr);
  const r = JSON.parse(json.stdout);
  t.deepEqual([r.variant, r.stateDictKey, r.architecture.embedDims, r.architecture.srRatios, r.architecture.numHeads],
    ['shunted', 'model', c0.arch.embedDims, c0.arch.srRatios, null], 'JSON: variant, state dict key, dims, no heads');
  t.end();
});

test('classify --num-heads: the golden logits, no kept tokens, in JSON and text', (t) => {
  const r = run(['classify', '--weights', shuntedFixture(c2.files.safetensors), '--num-heads', heads(c2), '--img-size', '64', '--json', input64]);
  t.equal(r.status, 0, r.stderr);
  const { results } = JSON.parse(r.stdout);
  const want = c2.cases.find((c) => c.imgSize === 64);
  results.forEach((res, b) => {
    const d = maxAbsDiff(res.logits, want.logits[b]);
    t.ok(d <= golden.tolerance.cpuLogitsAbs, `image ${b}: logits match the reference (${d.toExponential(2)})`);
    t.deepEqual(res.kept, [], `image ${b}: nothing kept`);
  });
  const text = run(['classify', '--weights', shuntedFixture(c0.files['pth-model']), '--num-heads', heads(c0), '--img-size', '64', '--top', '2', input64]);
  t.equal(text.status, 0, text.stderr);
  t.match(text.stdout, /^.*input-64\.npy\[0\]\n +\d+\.\d\d% +class \d\n +\d+\.\d\d% +class \d\n.*input-64\.npy\[1\]/, 'inputs and their top classes, no token counts');
  t.end();
});

test('classify: bad options are errors naming what is wrong', (t) => {
  const base = ['classify', '--weights', shuntedFixture(c0.files['pth-model']), input64];
  const cases = [
    [['--num-heads', heads(c0), '--img-size', '200'], /input 200 px gives stage 1 a 50x50 token grid, which its sr ratio 8 does not divide/],
    [['--num-heads', heads(c0), '--img-size', '64', '--keep-rate', '0.7'], /keepRate 0\.7: a Shunted Transformer drops no tokens/],
    [['--num-heads', '2,4,3,2', '--img-size', '64'], /numHeads 3 for stage 3 is odd/],
    [['--heads', '2', '--img-size', '64'], /one head count per stage, e\.g\. 2,4,8,16/],
    [['--heads', '2', '--num-heads', heads(c0)], /pass --heads or --num-heads, not both/],
    [['--img-size', '64'], /cannot infer the attention heads/],
  ];
  for (const [args, re] of cases) {
    const r = run([...base, ...args]);
    t.ok(r.status !== 0 && re.test(r.stderr), `${args.join(' ')}: exit ${r.status}, ${r.stderr.trim()}`);
  }
  t.end();
});

test('convert: a .pth to safetensors that loads the same; a recorded drop schedule is refused', (t) => {
  const out = path.join(tmp, 'c2.safetensors');
  const r = run(['convert', shuntedFixture(c2.files['pth-bare']), out]);
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /wrote .*c2\.safetensors: 179 tensors \(F32\)/, 'every float tensor written');
  t.match(r.stderr, /not written \(not floating point, unused by the model\): patch_embed1\.conv\.1\.num_batches_tracked/, 'the counters are not');
  const a = JSON.parse(run(['classify', '--weights', out, '--num-heads', heads(c2), '--img-size', '64', '--json', input64]).stdout);
  const b = JSON.parse(run(['classify', '--weights', shuntedFixture(c2.files['pth-bare']), '--num-heads', heads(c2), '--img-size', '64', '--json', input64]).stdout);
  t.deepEqual(a.results.map((x) => x.logits), b.results.map((x) => x.logits), 'identical logits from the converted file');
  const bf16 = run(['convert', shuntedFixture(c0.files['pth-model']), path.join(tmp, 'c0-bf16.safetensors'), '--dtype', 'bf16']);
  t.equal(bf16.status, 0, `--dtype bf16: ${bf16.stderr}`);
  const refused = run(['convert', shuntedFixture(c0.files['pth-model']), path.join(tmp, 'x.safetensors'), '--keep-rate', '0.7']);
  t.ok(refused.status !== 0 && /keepRate 0\.7: a Shunted Transformer drops no tokens/.test(refused.stderr), `--keep-rate refused: ${refused.stderr.trim()}`);
  const wrongArch = run(['convert', shuntedFixture(c0.files['pth-model']), path.join(tmp, 'y.safetensors'), '--arch', 'deit_small_patch16_224']);
  t.ok(wrongArch.status !== 0 && /unknown arch "deit_small_patch16_224"/.test(wrongArch.stderr), `a DeiT arch refused: ${wrongArch.stderr.trim()}`);
  t.end();
});

test('visualize refuses: there are no dropped patches to draw', (t) => {
  const r = run(['visualize', '--weights', shuntedFixture(c0.files['pth-model']), '--num-heads', heads(c0), '--img-size', '64',
    '--out', path.join(tmp, 'v.png'), path.join(__dirname, '..', 'examples', 'shapes.png')]);
  t.ok(r.status !== 0 && /a Shunted Transformer drops none/.test(r.stderr), r.stderr.trim());
  t.notOk(fs.existsSync(path.join(tmp, 'v.png')), 'nothing written');
  t.end();
});

test('serve --adaptive refuses a Shunted model: there is no keep rate to lower', (t) => {
  const r = spawnSync(process.execPath, [cli, 'serve', '--weights', shuntedFixture(c0.files['pth-model']), '--num-heads', heads(c0),
    '--img-size', '64', '--port', '0', '--adaptive'], { encoding: 'utf8', timeout: 60_000 });
  t.ok(r.status !== 0 && /keepRate 0\.9: a Shunted Transformer drops no tokens/.test(r.stderr), `exit ${r.status}: ${r.stderr.trim().split('\n').pop()}`);
  t.end();
});

test('serve: a Shunted model answers /v1/classify and the v2 protocol, then drains on SIGTERM', async (t) => {
  const child = spawn(process.execPath, [cli, 'serve', '--weights', shuntedFixture(c0.files['pth-model']), '--num-heads', heads(c0),
    '--img-size', '64', '--model-name', 'shunted', '--port', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (c) => { stderr += c; });
  const exited = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
  const base = await new Promise((resolve, reject) => {
    child.stderr.on('data', () => {
      const m = /serving on (http:\/\/\S+)/.exec(stderr);
      if (m) resolve(m[1]);
    });
    exited.then((code) => reject(new Error(`evit serve exited with ${code}: ${stderr}`)));
  });
  const png = await noisePng(7);
  const v1 = await request(base, { path: '/v1/classify?kept=1', headers: { 'content-type': 'image/png' }, body: png });
  t.equal(v1.status, 200, `POST /v1/classify: ${JSON.stringify(v1.body).slice(0, 200)}`);
  const [res] = v1.body.results;
  t.ok(res.top.length > 0 && res.logits.length === 10, 'top classes and 10 logits');
  t.deepEqual(res.kept, [], 'no kept tokens');
  t.equal(v1.body.keepRate, 1, 'served at keep rate 1: nothing dropped');
  const meta = await request(base, { method: 'GET', path: '/v2/models/shunted' });
  t.deepEqual([meta.status, meta.body.inputs[0].shape], [200, [-1, 3, 64, 64]], 'v2 metadata: the input shape');
  const infer = await request(base, { path: '/v2/models/shunted/infer', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ inputs: [{ name: 'image', shape: [1], datatype: 'BYTES', data: [png.toString('base64')] }] }) });
  t.ok(infer.status === 200 && infer.body.outputs[0].shape.join() === '1,10', `v2 infer: logits [1, 10] (${infer.status})`);
  child.kill('SIGTERM');
  t.equal(await exited, 0, 'exits 0');
});
