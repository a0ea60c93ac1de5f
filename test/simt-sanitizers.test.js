'use strict';
// The emulated kernels under AddressSanitizer + UBSan (the fibers annotated for ASan): the
// kernel, execution-model and instruction tests run clean, and a deliberate out-of-bounds
// global read, a one-byte shared-memory overrun and misaligned float4 / float2 loads each
// stop the program with a report naming the file and line (test/simt/tests/sanitizer_probe.cu).
const test = require('tape');
const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { build, runChecks } = require('./simt/tape');
const { kernelProgram } = require('./simt/programs');

const ENV = { ASAN_OPTIONS: 'detect_leaks=0', UBSAN_OPTIONS: 'print_stacktrace=1' };
const PROBE = 'test/simt/tests/sanitizer_probe.cu';

test('SIMT emulator under ASan + UBSan: the kernel tests run clean', async (t) => {
  const exe = await build(t, kernelProgram({ flavour: 'asan', name: 'simt_kernels_asan' }));
  if (!exe) return;
  for (const part of ['f32', 'f16', 'bf16', 'topk']) runChecks(t, exe, { args: [part], label: `${part} (ASan)`, env: ENV, minChecks: 10 });
});

test('SIMT emulator under ASan + UBSan: the execution-model and instruction tests run clean, fault paths included', async (t) => {
  for (const name of ['execution', 'instructions']) {
    const exe = await build(t, { name: `simt_${name}_asan`, flavour: 'asan', units: [`test/simt/tests/${name}_test.cu`], include: ['test/simt/tests'] });
    if (exe) runChecks(t, exe, { label: `${name} (ASan)`, env: ENV, minChecks: 50 });
  }
});

test('SIMT emulator under ASan + UBSan: invalid accesses fail with file and line', async (t) => {
  const exe = await build(t, { name: 'simt_sanitizer_probe', flavour: 'asan', units: [PROBE] });
  if (!exe) return;
  const source = fs.readFileSync(path.join(__dirname, '..', PROBE), 'utf8').split('\n');
  const lineOf = (c) => source.findIndex((l) => l.includes(`// probe: ${c}`)) + 1;
  const clean = spawnSync(exe, ['clean'], { encoding: 'utf8', env: { ...process.env, ...ENV } });
  t.equal(clean.status, 0, `the probe kernels run clean with valid arguments${clean.stderr ? `: ${clean.stderr.slice(-300)}` : ''}`);
  const cases = [
    ['global', /ERROR: AddressSanitizer: heap-buffer-overflow/, 'an out-of-bounds read of cudaMalloc memory'],
    ['shared', /ERROR: AddressSanitizer: use-after-poison/, 'a one-byte overrun of the dynamic shared memory'],
    ['float4', /runtime error: .*misaligned address .* for type 'const (struct )?float4', which requires 16 byte alignment/, 'a misaligned float4 load'],
    ['float2', /runtime error: .*misaligned address .* for type 'const (struct )?float2', which requires 8 byte alignment/, 'a misaligned float2 load'],
  ];
  for (const [c, report, what] of cases) {
    const r = spawnSync(exe, [c], { encoding: 'utf8', env: { ...process.env, ...ENV } });
    const where = `${path.basename(PROBE)}:${lineOf(c)}`;
    t.ok(r.status !== 0 && report.test(r.stderr) && r.stderr.includes(where),
      `${what} stops the program with ${report.source.startsWith('ERROR') ? 'an ASan' : 'a UBSan'} report at ${where}` +
      `${r.status === 0 || !r.stderr.includes(where) ? `: ${r.stderr.slice(0, 600)}` : ''}`);
  }
});
