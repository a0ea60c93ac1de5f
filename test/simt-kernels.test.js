'use strict';
// Every kernel of cuda/ executed on the SIMT emulator against float64 references
// (test/simt/tests/kernels_test.cc): f32, f16 and bf16, small awkward shapes, every GEMM
// tiling and split-K, every attention path, each under forward, reverse and random thread orders
// with bit-identical results across them.
const test = require('tape');
const { build, runChecks } = require('./simt/tape');
const { kernelProgram } = require('./simt/programs');

test('SIMT emulator: every kernel against float64 references', async (t) => {
  const exe = await build(t, kernelProgram());
  if (!exe) return;
  for (const part of ['f32', 'f16', 'bf16', 'topk']) runChecks(t, exe, { args: [part], label: part, minChecks: 10 });
});
