'use strict';
// Runs tape test files, each in its own process, and totals tape's `# pass` / `# fail`.
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

/** Runs the named files of `dir` (default: every *.test.js in it); returns the totals and failed checks. */
function runTapeFiles(dir, only = []) {
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
      // A crash or an unfinished plan counts as a failure even when tape printed no summary.
      failed += 1;
      failures.push(`${path.basename(file)} exited with ${r.status ?? r.signal}`);
      process.stdout.write(`not ok - ${path.basename(file)} exited with ${r.status ?? r.signal}\n`);
    }
  }
  return { passed, failed, failures };
}

module.exports = { runTapeFiles };
