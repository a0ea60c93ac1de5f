'use strict';
// Runs every tape test file in its own process and ends with "N passed, N failed".
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const dir = __dirname;
const only = process.argv.slice(2);
const files = (only.length ? only : fs.readdirSync(dir).filter((f) => f.endsWith('.test.js')).sort())
  .map((f) => path.resolve(dir, path.basename(f)));

let passed = 0;
let failed = 0;
for (const file of files) {
  const r = spawnSync(process.execPath, [file], { encoding: 'utf8', maxBuffer: 64 << 20, env: process.env });
  process.stdout.write(r.stdout);
  process.stderr.write(r.stderr);
  const pass = /^# pass\s+(\d+)/m.exec(r.stdout);
  const fail = /^# fail\s+(\d+)/m.exec(r.stdout);
  passed += pass ? Number(pass[1]) : 0;
  failed += fail ? Number(fail[1]) : 0;
  if (r.status !== 0 && !fail) {
    // A crash or an unfinished plan counts as a failure even when tape printed no summary.
    failed += 1;
    process.stdout.write(`not ok - ${path.basename(file)} exited with ${r.status ?? r.signal}\n`);
  }
}
console.log(`${passed} passed, ${failed} failed`);
process.exitCode = failed > 0 ? 1 : 0;
