'use strict';
// The CPU kernels have scalar, AVX2 and AVX-512 paths chosen at run time. Run the op and
// parity tests (DeiT and Shunted) again with the wider paths switched off, so each path is checked here.
const test = require('tape');
const path = require('node:path');
const { spawnSync } = require('node:child_process');

for (const isa of ['avx2', 'scalar']) {
  test(`op and parity tests pass with EVIT_CPU_ISA=${isa}`, (t) => {
    const probe = spawnSync(process.execPath, ['-e', "process.stdout.write(require('./dist').backendInfo().cpu.simd)"], {
      encoding: 'utf8',
      cwd: path.join(__dirname, '..'),
      env: { ...process.env, EVIT_CPU_ISA: isa },
    });
    const widest = require('../dist').backendInfo().cpu.simd;
    const expected = isa === 'scalar' || widest !== 'scalar' ? isa : 'scalar';
    t.equal(probe.stdout, expected, `kernels take the ${expected} path`);
    for (const file of ['ops.test.js', 'parity.test.js', 'ops-shunted.test.js', 'shunted-native.test.js']) {
      const r = spawnSync(process.execPath, [path.join(__dirname, file)], {
        encoding: 'utf8',
        env: { ...process.env, EVIT_CPU_ISA: isa },
        maxBuffer: 64 << 20,
      });
      const pass = Number((/^# pass\s+(\d+)/m.exec(r.stdout) || [])[1] || 0);
      const fail = Number((/^# fail\s+(\d+)/m.exec(r.stdout) || [])[1] || 0);
      t.equal(r.status, 0, `${file} exits 0`);
      t.ok(pass > 50, `${file}: ${pass} assertions passed`);
      t.equal(fail, 0, `${file}: no failures${fail ? '\n' + r.stdout.split('\n').filter((l) => l.startsWith('not ok')).join('\n') : ''}`);
    }
    t.end();
  });
}
