'use strict';
// `npm run test:gpu`: the CUDA backend against the CPU backend. Without a usable CUDA device it
// fails at once, saying why (a GPU suite that passes by skipping everything would prove nothing).
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { loadBinding } = require('../../dist/native');

const cuda = loadBinding().backendInfo().cuda;
if (!cuda.available) {
  process.stderr.write(
    '\n*** test:gpu FAILED: the CUDA backend cannot run here ***\n' +
      `    reason: ${cuda.reason}\n` +
      `    addon built with CUDA: ${cuda.compiled}; driver ${cuda.driverVersion}, runtime ${cuda.runtimeVersion}\n` +
      '    Run this suite on a machine with an NVIDIA GPU of compute capability 8.0 or newer\n' +
      '    (tools/gpu-check.sh does the build, this suite, the sanitizers and the benchmark in one go).\n\n',
  );
  process.exit(2);
}
for (const d of cuda.devices) console.log(`# device: ${d.name}, compute ${d.computeCapability}, ${(d.memoryBytes / 2 ** 30).toFixed(1)} GiB`);

const dir = __dirname;
const only = process.argv.slice(2);
const files = (only.length ? only : fs.readdirSync(dir).filter((f) => f.endsWith('.test.js')).sort())
  .map((f) => path.resolve(dir, path.basename(f)));

let passed = 0;
let failed = 0;
const failures = [];
for (const file of files) {
  const r = spawnSync(process.execPath, [file], { encoding: 'utf8', maxBuffer: 64 << 20, env: process.env });
  process.stdout.write(r.stdout);
  process.stderr.write(r.stderr);
  const pass = /^# pass\s+(\d+)/m.exec(r.stdout);
  const fail = /^# fail\s+(\d+)/m.exec(r.stdout);
  passed += pass ? Number(pass[1]) : 0;
  failed += fail ? Number(fail[1]) : 0;
  for (const m of r.stdout.matchAll(/^not ok \d+ (.*)$/gm)) failures.push(`${path.basename(file)}: ${m[1]}`);
  if (r.status !== 0 && !fail) {
    failed += 1;
    failures.push(`${path.basename(file)} exited with ${r.status ?? r.signal}`);
  }
}
console.log(`\n${passed} passed, ${failed} failed`);
if (failures.length) console.log(`failed checks:\n  ${failures.join('\n  ')}`);
process.exitCode = failed > 0 ? 1 : 0;
