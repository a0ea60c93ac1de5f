'use strict';
// The addon must load on a bare glibc system: no libopenblas, libgfortran, libcudart at run time.
const test = require('tape');
const fs = require('node:fs');
const path = require('node:path');
const { execFileSync } = require('node:child_process');

const ALLOWED = ['linux-vdso', 'ld-linux', 'libc.so', 'libm.so', 'libstdc++.so', 'libgcc_s.so', 'libpthread.so', 'libdl.so'];
const addon = path.join(__dirname, '..', 'build', 'Release', 'evit.node');

test('the built addon depends only on libc, libm, libstdc++, libgcc_s, libpthread, libdl', (t) => {
  t.ok(fs.existsSync(addon), `${addon} exists`);
  const out = execFileSync('ldd', [addon], { encoding: 'utf8' });
  const libs = out.split('\n').map((l) => l.trim().split(/\s+/)[0]).filter(Boolean);
  t.ok(libs.length >= 3, `ldd listed ${libs.length} libraries`);
  for (const lib of libs) t.ok(ALLOWED.some((a) => path.basename(lib).startsWith(a)), `allowed: ${lib}`);
  t.doesNotMatch(out, /not found/, 'every dependency resolves');
  t.end();
});

test('OpenBLAS symbols are not exported from the addon', (t) => {
  const syms = execFileSync('nm', ['-D', '--defined-only', addon], { encoding: 'utf8' });
  t.doesNotMatch(syms, / T cblas_sgemm$/m, 'cblas_sgemm is private');
  t.match(syms, / T napi_register_module_v1$/m, 'the module entry point is exported');
  t.end();
});
