'use strict';
// Known-answer tests of the SIMT emulator's instruction twins, written from the PTX ISA
// (test/simt/tests/instructions_test.cu): mma.sync.m16n8k16 f16/bf16, ldmatrix x1/x2/x4 with
// and without .trans, cp.async src-size and commit/wait_group semantics, 16-bit rounding.
const test = require('tape');
const { build, runChecks } = require('./simt/tape');

test('SIMT emulator: instruction twins against the PTX ISA', async (t) => {
  const exe = await build(t, { name: 'simt_instructions', units: ['test/simt/tests/instructions_test.cu'], include: ['test/simt/tests'] });
  if (exe) runChecks(t, exe, { minChecks: 40 });
});
