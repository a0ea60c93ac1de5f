'use strict';
// The CUDA backend end to end on the SIMT emulator (test/simt): its host code (cuda/cuda_model.cu,
// execution_context.cu, device_arena.cu, device_weights.cu, the probe) and every real kernel
// compiled as C++ against the emulated runtime, checked against the CPU backend
// (test/native/cuda_model_emulated.cc): every plan shape, chunked batches, graph capture and
// replay, the launches of a pass, profile slots, thread orders, concurrent passes, f16 and bf16,
// and the error paths; and its Shunted Transformer (cuda/shunted_model.cu,
// test/native/cuda_shunted_emulated.cc) against the CPU backend's the same way. Runs without a GPU
// (CI); test/gpu/ runs the same backend on one.
const test = require('tape');
const fs = require('node:fs');
const path = require('node:path');
const { build, runChecks } = require('./simt/tape');

const root = path.join(__dirname, '..');
const OPENBLAS = ['/usr/include/x86_64-linux-gnu/openblas-pthread', '/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.a'];
const common = [
  ...fs.readdirSync(path.join(root, 'cuda')).filter((f) => f.endsWith('.cu')).map((f) => `cuda/${f}`),
  ...['plan.cc', 'host_weights.cc', 'shunted.cc'].map((f) => `src/backend/${f}`),
  ...fs.readdirSync(path.join(root, 'src/cpu')).filter((f) => f.endsWith('.cc')).map((f) => `src/cpu/${f}`),
];
const program = (name) => ({ name, units: [...common, `test/native/${name}.cc`], include: [OPENBLAS[0]], libs: [OPENBLAS[1]] });

test('the CUDA backend with its real kernels, on the SIMT emulator, matches the CPU backend', async (t) => {
  const exe = await build(t, program('cuda_model_emulated'));
  if (exe) runChecks(t, exe, { minChecks: 100 });
});

test('the CUDA backend\'s Shunted Transformer, on the SIMT emulator, matches the CPU backend\'s', async (t) => {
  const exe = await build(t, program('cuda_shunted_emulated'));
  if (exe) runChecks(t, exe, { minChecks: 20 });
});
