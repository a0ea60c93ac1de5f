'use strict';
// The SIMT emulator's execution model and runtime (test/simt/tests/execution_test.cu):
// indices, barriers, warp collectives, schedules, shared memory, the errors for misused
// barriers and collectives (with file and line, never a hang), launch checks, streams,
// events, graph capture, fault injection and launch records.
const test = require('tape');
const { build, runChecks } = require('./simt/tape');

test('SIMT emulator: execution model and runtime', async (t) => {
  const exe = await build(t, { name: 'simt_execution', units: ['test/simt/tests/execution_test.cu'], include: ['test/simt/tests'] });
  if (exe) runChecks(t, exe, { minChecks: 80 });
});
