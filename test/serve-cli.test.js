'use strict';
// `evit serve` as a process: listens on loopback, serves, and on SIGTERM finishes the
// requests it has accepted before exiting 0.
const test = require('tape');
const path = require('node:path');
const { spawn, spawnSync } = require('node:child_process');
const { tinyModel } = require('./helpers/fixtures');
const { noisePng, request, post, until } = require('./helpers/serve');

const CLI = path.join(__dirname, '..', 'dist', 'cli.js');

function startServe(args) {
  const child = spawn(process.execPath, [CLI, 'serve', '--weights', tinyModel, '--heads', '3', '--port', '0', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (c) => { stderr += c; });
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  const address = new Promise((resolve, reject) => {
    const onData = () => {
      const m = /serving on (http:\/\/\S+)/.exec(stderr);
      if (m) resolve(m[1]);
    };
    child.stderr.on('data', onData);
    exited.then(({ code }) => reject(new Error(`evit serve exited with ${code}: ${stderr}`)));
  });
  return { child, address, exited, stderr: () => stderr };
}

test('evit serve listens on loopback, serves, and drains on SIGTERM', async (t) => {
  // Requests wait for company up to a minute: at SIGTERM they are certainly still queued.
  const s = startServe(['--max-wait-ms', '60000', '--max-batch', '1000']);
  const base = await s.address;
  t.match(base, /^http:\/\/127\.0\.0\.1:\d+$/, `listens on loopback by default (${base})`);
  const pngs = await Promise.all([1, 2, 3].map((i) => noisePng(i)));
  const pending = pngs.map((p) => post(base, 'image/png', p));
  await until('three queued requests', async () => (await request(base, { method: 'GET', path: '/healthz' })).body.queued === 3);
  s.child.kill('SIGTERM');
  const answers = await Promise.all(pending);
  t.deepEqual(answers.map((r) => r.status), [200, 200, 200], 'the queued requests are answered');
  t.ok(answers.every((r) => r.body.batchSize === 3 && r.body.keepRate === 0.7), 'in one batch, at the default keep rate');
  const { code } = await s.exited;
  t.equal(code, 0, 'exits 0');
  t.match(s.stderr(), /finishing accepted requests[\s\S]*stopped/, 'says it is draining, then stopped');
});

test('evit serve answers the v2 protocol under --model-name, and says when it listens and when it serves', async (t) => {
  const s = startServe(['--model-name', 'tiny']);
  const base = await s.address;
  t.match(s.stderr(), /listening on http:\/\/127\.0\.0\.1:\d+, loading the model…\n[\s\S]*serving on/, 'listening (loading the model), then serving');
  const meta = await request(base, { method: 'GET', path: '/v2/models/tiny' });
  t.deepEqual([meta.status, meta.body.name, meta.body.inputs[0].shape], [200, 'tiny', [-1, 3, 224, 224]], 'GET /v2/models/tiny');
  const ready = await request(base, { method: 'GET', path: '/v2/health/ready' });
  t.deepEqual([ready.status, ready.body], [200, { ready: true }], 'ready');
  const png = await noisePng(4);
  const r = await request(base, { path: '/v2/models/tiny/infer', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ inputs: [{ name: 'image', shape: [1], datatype: 'BYTES', data: [png.toString('base64')] }] }) });
  t.ok(r.status === 200 && r.body.outputs[0].shape.join() === '1,10', 'infer answers logits [1, 10]');
  s.child.kill('SIGTERM');
  t.equal((await s.exited).code, 0, 'exits 0');
});

test('evit serve with a checkpoint that does not load: listens, then exits 1 saying why', async (t) => {
  const fs = require('node:fs');
  const os = require('node:os');
  const bad = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'evit-serve-')), 'broken.safetensors');
  fs.writeFileSync(bad, Buffer.from('not a checkpoint'));
  const child = spawn(process.execPath, [CLI, 'serve', '--weights', bad, '--port', '0'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (c) => { stderr += c; });
  const code = await new Promise((resolve) => child.on('exit', resolve));
  t.equal(code, 1, 'exit 1');
  t.match(stderr, /listening on[\s\S]*EVIT_BAD_WEIGHTS/, `it listened, then reported the checkpoint (${stderr.trim().split('\n').pop()})`);
  fs.rmSync(path.dirname(bad), { recursive: true, force: true });
});

test('without --weights, evit serve serves the bundled model with its labels', async (t) => {
  const fs = require('node:fs');
  const card = path.join(__dirname, '..', 'models', 'fashion-mnist', 'config.json');
  if (!fs.existsSync(card)) {
    t.skip('the bundled model is not in this checkout');
    return;
  }
  const labels = JSON.parse(fs.readFileSync(card, 'utf8')).labels;
  const child = spawn(process.execPath, [CLI, 'serve', '--port', '0'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (c) => { stderr += c; });
  await until('the server to start', () => /serving on/.test(stderr) || child.exitCode !== null);
  const base = /serving on (http:\/\/\S+)/.exec(stderr)[1];
  const r = await post(base, 'image/png', await noisePng(3, 28, 28));
  t.equal(r.status, 200, 'a 28×28 image is classified');
  t.ok(r.body.results[0].top.every((x) => x.label === labels[x.index]), `labels come from the model card (${r.body.results[0].top[0].label})`);
  const exited = new Promise((resolve) => child.on('exit', resolve));
  child.kill('SIGINT');
  t.equal(await exited, 0, 'SIGINT: exits 0');
});

test('evit serve rejects bad options with exit code 2', (t) => {
  for (const [args, re] of [
    [['--target-ms', '20'], /need --adaptive/],
    [['--body-limit', 'lots'], /--body-limit must be a byte count/],
    [['--port', 'eighty'], /--port must be a number/],
    [['extra'], /no positional arguments/],
  ]) {
    const r = spawnSync(process.execPath, [CLI, 'serve', '--weights', tinyModel, '--heads', '3', ...args], { encoding: 'utf8' });
    t.equal(r.status, 2, `${args.join(' ')}: exit 2`);
    t.match(r.stderr, re, `${args.join(' ')}: ${r.stderr.split('\n')[0]}`);
  }
  const adaptive = spawnSync(process.execPath, [CLI, 'serve', '--weights', tinyModel, '--heads', '3', '--adaptive', '--adaptive-rates', '0.5,0.9'], { encoding: 'utf8' });
  t.equal(adaptive.status, 2, 'increasing adaptive rates: exit 2');
  t.match(adaptive.stderr, /strictly decreasing/, 'names the problem');
  t.end();
});
