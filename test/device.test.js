'use strict';
// Backend choice on any machine: the device option, EVIT_DEVICE, 'auto', the typed error when
// CUDA is asked for and cannot run, the native options' checks, and what `evit info` says.
const test = require('tape');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const evit = require('../dist');
const { resolveDevice, requestedDevice, cudaSettings } = require('../dist/device');
const { loadBinding } = require('../dist/native');
const { tinyModel, tinyOptions } = require('./helpers/fixtures');

/** Passes when `promise` rejects with an error `pred` accepts (an Error class, or a predicate). */
async function rejects(t, promise, pred, msg) {
  let err = null;
  try {
    await promise;
  } catch (e) {
    err = e;
  }
  if (!err) return t.fail(`${msg}: resolved`);
  const ok = pred.prototype instanceof Error ? err instanceof pred : pred(err);
  return t.ok(ok, ok ? msg : `${msg}: got ${err.name} ${err.code ?? ''} ${err.message}`);
}

const cli = path.join(__dirname, '..', 'dist', 'cli.js');
const info = loadBinding().backendInfo();
const noCuda = { compiled: true, available: false, reason: 'no NVIDIA driver found', driverVersion: 0, runtimeVersion: 13000, devices: [] };
const withCuda = { compiled: true, available: true, reason: null, driverVersion: 13000, runtimeVersion: 13000, devices: [{ name: 'GPU', computeCapability: '9.0', memoryBytes: 8e10 }] };

test('auto picks CUDA when it is available, else the CPU with the reason', (t) => {
  t.deepEqual(resolveDevice(undefined, withCuda, {}), { backend: 'cuda', reason: null, requested: 'auto', source: 'default' });
  t.deepEqual(resolveDevice('auto', noCuda, {}), { backend: 'cpu', reason: 'no NVIDIA driver found', requested: 'auto', source: 'option' });
  const cpu = resolveDevice('cpu', withCuda, {});
  t.equal(cpu.backend, 'cpu', "device 'cpu' stays on the CPU even with a GPU");
  t.match(cpu.reason, /device: 'cpu' was requested/);
  t.end();
});

test('EVIT_DEVICE sets the default and an explicit option wins over it', (t) => {
  t.equal(resolveDevice(undefined, withCuda, { EVIT_DEVICE: 'cpu' }).backend, 'cpu');
  t.match(resolveDevice(undefined, withCuda, { EVIT_DEVICE: 'cpu' }).reason, /EVIT_DEVICE='cpu'/);
  t.equal(resolveDevice('cuda', withCuda, { EVIT_DEVICE: 'cpu' }).backend, 'cuda', 'option beats the variable');
  t.equal(resolveDevice('auto', noCuda, { EVIT_DEVICE: 'cuda' }).backend, 'cpu', "an explicit 'auto' beats EVIT_DEVICE=cuda");
  t.deepEqual(requestedDevice(undefined, { EVIT_DEVICE: ' CUDA ' }), { requested: 'cuda', source: 'EVIT_DEVICE' }, 'case and spaces forgiven');
  t.deepEqual(requestedDevice(undefined, { EVIT_DEVICE: '' }), { requested: 'auto', source: 'default' }, 'empty means unset');
  t.throws(() => requestedDevice(undefined, { EVIT_DEVICE: 'gpu' }), (e) => e.code === 'EVIT_BAD_OPTIONS' && /EVIT_DEVICE must be/.test(e.message));
  t.throws(() => requestedDevice('gpu', {}), (e) => e.code === 'EVIT_BAD_OPTIONS' && /device must be 'auto', 'cpu' or 'cuda', got "gpu"/.test(e.message));
  t.end();
});

test("'cuda' without a usable device is a DeviceError carrying the probe's reason", (t) => {
  for (const [option, env, origin] of [['cuda', {}, "device: 'cuda'"], [undefined, { EVIT_DEVICE: 'cuda' }, "EVIT_DEVICE='cuda'"]]) {
    try {
      resolveDevice(option, noCuda, env);
      t.fail('no error');
    } catch (e) {
      t.ok(e instanceof evit.DeviceError, 'DeviceError');
      t.equal(e.code, 'EVIT_NO_DEVICE');
      t.ok(e.message.includes(origin) && e.message.endsWith('no NVIDIA driver found'), e.message);
    }
  }
  t.end();
});

test('CUDA options are checked whatever the device', (t) => {
  t.deepEqual(cudaSettings({}), { precision: 'bf16', maxBatch: 64, streams: 2 }, 'defaults');
  t.deepEqual(cudaSettings({ precision: 'f16', maxBatch: 7, streams: 3 }), { precision: 'f16', maxBatch: 7, streams: 3 });
  for (const [opts, re] of [
    [{ precision: 'fp16' }, /precision must be 'f32', 'f16' or 'bf16', got "fp16"/],
    [{ maxBatch: 0 }, /maxBatch must be an integer from 1 to 4096, got 0/],
    [{ maxBatch: 2.5 }, /maxBatch/],
    [{ streams: 17 }, /streams must be an integer from 1 to 16, got 17/],
  ])
    t.throws(() => cudaSettings(opts), (e) => e.code === 'EVIT_BAD_OPTIONS' && re.test(e.message), re.source);
  t.end();
});

test('the CUDA option bounds are the addon\'s limits', (t) => {
  const { limits } = info;
  t.equal(cudaSettings({ maxBatch: limits.maxBatch, streams: limits.maxStreams }).maxBatch, limits.maxBatch, 'up to backendInfo().limits');
  t.throws(() => cudaSettings({ streams: limits.maxStreams + 1 }),
    (e) => e.message === `streams must be an integer from 1 to ${limits.maxStreams}, got ${limits.maxStreams + 1}`, 'streams above limits.maxStreams');
  const small = { maxBatch: 8, maxThreads: 2, maxStreams: 3 };
  t.deepEqual(cudaSettings({ maxBatch: 8, streams: 3 }, small), { precision: 'bf16', maxBatch: 8, streams: 3 }, 'other limits, other bounds');
  t.throws(() => cudaSettings({ maxBatch: 9 }, small), /maxBatch must be an integer from 1 to 8, got 9/);
  t.throws(() => cudaSettings({ maxBatch: 8, streams: 4 }, small), /streams must be an integer from 1 to 3, got 4/);
  t.end();
});

test('loadModel on this machine: backend, backendReason and precision agree with the probe', async (t) => {
  const model = await evit.loadModel(tinyModel, tinyOptions);
  if (info.cuda.available) {
    t.equal(model.backend, 'cuda', 'auto takes the GPU');
    t.equal(model.backendReason, null);
    t.equal(model.precision, 'bf16', 'default precision');
  } else {
    t.equal(model.backend, 'cpu', 'auto falls back to the CPU');
    t.equal(model.backendReason, info.cuda.reason, `reason: ${model.backendReason}`);
    t.equal(model.precision, 'f32', 'the CPU computes in f32');
  }
  model.dispose();

  const cpu = await evit.loadModel(tinyModel, { ...tinyOptions, device: 'cpu' });
  t.equal(cpu.backend, 'cpu');
  t.match(cpu.backendReason, /device: 'cpu' was requested/);
  cpu.dispose();
  await rejects(t, evit.loadModel(tinyModel, { ...tinyOptions, device: 'cpu', precision: 'bf16' }),
    (e) => e.code === 'EVIT_BAD_OPTIONS' && /needs the CUDA backend/.test(e.message), "device 'cpu' with a 16-bit precision");
  await rejects(t, evit.loadModel(tinyModel, { ...tinyOptions, device: 'tpu' }), (e) => e.code === 'EVIT_BAD_OPTIONS', "device 'tpu'");
  if (!info.cuda.available) {
    await rejects(t, evit.loadModel(tinyModel, { ...tinyOptions, device: 'cuda' }),
      (e) => e instanceof evit.DeviceError && e.message.includes(info.cuda.reason), "device 'cuda' rejects with the reason");
  }
});

test('EVIT_DEVICE reaches loadModel through the environment', (t) => {
  const script = `require(${JSON.stringify(path.join(__dirname, '..', 'dist'))}).loadModel(${JSON.stringify(tinyModel)}, ${JSON.stringify(tinyOptions)})
    .then((m) => console.log(JSON.stringify({ backend: m.backend, reason: m.backendReason })), (e) => console.log(JSON.stringify({ code: e.code, message: e.message })))`;
  const run = (value) => JSON.parse(spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', env: { ...process.env, EVIT_DEVICE: value } }).stdout);
  t.deepEqual(run('cpu'), { backend: 'cpu', reason: "EVIT_DEVICE='cpu' was requested" });
  const cuda = run('cuda');
  if (info.cuda.available) t.equal(cuda.backend, 'cuda');
  else t.deepEqual(cuda, { code: 'EVIT_NO_DEVICE', message: `EVIT_DEVICE='cuda' was requested but CUDA cannot be used: ${info.cuda.reason}` });
  t.equal(run('npu').code, 'EVIT_BAD_OPTIONS');
  t.end();
});

test('the native Model checks its backend options', (t) => {
  const { Model } = loadBinding();
  const cfg = { embedDim: 6, depth: 1, numHeads: 2, patchSize: 2, inChans: 1, gridH: 1, gridW: 1, numClasses: 2, mlpHidden: 4 };
  const tensors = {};
  const sizes = { cls_token: 6, pos_embed: 12, 'patch_embed.proj.weight': 24, 'patch_embed.proj.bias': 6,
    'blocks.0.norm1.weight': 6, 'blocks.0.norm1.bias': 6, 'blocks.0.attn.qkv.weight': 108, 'blocks.0.attn.qkv.bias': 18,
    'blocks.0.attn.proj.weight': 36, 'blocks.0.attn.proj.bias': 6, 'blocks.0.norm2.weight': 6, 'blocks.0.norm2.bias': 6,
    'blocks.0.mlp.fc1.weight': 24, 'blocks.0.mlp.fc1.bias': 4, 'blocks.0.mlp.fc2.weight': 24, 'blocks.0.mlp.fc2.bias': 6,
    'norm.weight': 6, 'norm.bias': 6, 'head.weight': 12, 'head.bias': 2 };
  for (const [k, n] of Object.entries(sizes)) tensors[k] = new Float32Array(n).fill(0.1);
  const m = new Model(cfg, tensors, { device: 'cpu', precision: 'f32' });
  t.equal(m.backend, 'cpu');
  t.equal(m.precision, 'f32');
  m.dispose();
  t.throws(() => new Model(cfg, tensors, { device: 'gpu' }), /options.device must be one of 'cpu', 'cuda', got gpu/);
  t.throws(() => new Model(cfg, tensors, { precision: 'bf16' }), /options.precision 'bf16' needs device 'cuda'/);
  t.throws(() => new Model(cfg, tensors, { device: 'cuda', maxBatch: 0 }), /options.maxBatch must be an integer in \[1, 4096\]/);
  t.throws(() => new Model(cfg, tensors, { device: 'cuda', streams: 99 }), /options.streams must be an integer in \[1, 16\]/);
  if (!info.cuda.available) {
    t.throws(() => new Model(cfg, tensors, { device: 'cuda' }), (e) => e.message.includes(info.cuda.reason),
      `device 'cuda' fails to construct: ${info.cuda.reason}`);
  }
  t.end();
});

test('evit info names the backend auto picks and why', (t) => {
  const run = (env) => spawnSync(process.execPath, [cli, 'info'], { encoding: 'utf8', env: { ...process.env, ...env } });
  const auto = run({ EVIT_DEVICE: '' });
  t.equal(auto.status, 0, auto.stderr);
  if (info.cuda.available) t.match(auto.stdout, /^backend: cuda \(device 'auto'\)$/m);
  else t.ok(auto.stdout.includes(`backend: cpu (device 'auto': ${info.cuda.reason})`), auto.stdout.trim().split('\n').pop());
  t.match(auto.stdout, info.cuda.compiled ? /^cuda: (available|not usable: )/m : /^cuda: not built: .*without nvcc/m);
  const cpu = run({ EVIT_DEVICE: 'cpu' });
  t.match(cpu.stdout, /^backend: cpu \(EVIT_DEVICE=cpu\)$/m);
  if (!info.cuda.available) {
    const cuda = run({ EVIT_DEVICE: 'cuda' });
    t.equal(cuda.status, 1, 'EVIT_DEVICE=cuda without a device exits 1');
    t.match(cuda.stdout, /^backend: none: EVIT_DEVICE='cuda' was requested but CUDA cannot be used: /m);
  }
  t.end();
});
