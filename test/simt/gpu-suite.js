'use strict';
// `npm run test:simt`: the GPU test suite (test/gpu) on the CUDA backend built for the SIMT
// emulator (npm run build:simt), under three thread orders: forward, reverse and a seeded random
// one, two at a time on the machine's cores. Each order must pass the whole suite, and a fixed
// workload (test/gpu/digest.js) must give bit-identical results under all three. Ends with
// "N passed, N failed" over all of it.
const fs = require('node:fs');
const path = require('node:path');
const { spawn } = require('node:child_process');

const root = path.join(__dirname, '..', '..');
const addon = process.env.EVIT_SIMT_BINDING || path.join(root, 'build', 'simt', 'Release', 'evit.node');
const SCHEDULES = ['forward', 'reverse', 'random:20261203'];

function run(args, schedule) {
  return new Promise((resolve) => {
    const env = { ...process.env, EVIT_BINDING: addon, EVIT_SIMT_SCHEDULE: schedule, EVIT_DEVICE: 'cuda' };
    const p = spawn(process.execPath, args, { cwd: root, env });
    let out = '';
    let err = '';
    p.stdout.on('data', (d) => { out += d; });
    p.stderr.on('data', (d) => { err += d; });
    p.on('close', (status) => resolve({ status, out, err }));
  });
}

async function main() {
  if (!fs.existsSync(addon)) {
    console.error(`test:simt: ${addon} is missing; run npm run build:simt first`);
    process.exit(2);
  }
  const filter = process.argv.slice(2);
  let passed = 0;
  let failed = 0;
  const results = [];
  // Two orders at a time: the emulator runs a launch on one host thread.
  const queue = SCHEDULES.map((s) => s);
  const worker = async () => {
    for (let s = queue.shift(); s; s = queue.shift()) {
      const started = Date.now();
      const [suite, digest] = [await run([path.join('test', 'gpu', 'run.js'), ...filter], s), await run([path.join('test', 'gpu', 'digest.js')], s)];
      results.push({ schedule: s, suite, digest, seconds: (Date.now() - started) / 1000 });
    }
  };
  await Promise.all([worker(), worker()]);
  results.sort((a, b) => SCHEDULES.indexOf(a.schedule) - SCHEDULES.indexOf(b.schedule));
  for (const r of results) {
    process.stdout.write(`\n# ---- EVIT_SIMT_SCHEDULE=${r.schedule} (${r.seconds.toFixed(0)} s) ----\n`);
    process.stdout.write(r.suite.out);
    if (r.suite.err.trim()) process.stderr.write(r.suite.err);
    const m = /^(\d+) passed, (\d+) failed$/m.exec(r.suite.out);
    if (m && r.suite.status !== 2) {
      passed += Number(m[1]);
      failed += Number(m[2]);
    } else {
      failed += 1;
      process.stdout.write(`not ok - test/gpu under ${r.schedule} did not finish (exit ${r.suite.status})\n`);
    }
  }
  const digests = results.map((r) => ({ schedule: r.schedule, digest: r.digest.status === 0 ? r.digest.out.trim() : null, err: r.digest.err }));
  const first = digests[0].digest;
  const same = first !== null && digests.every((d) => d.digest === first);
  for (const d of digests) process.stdout.write(`# digest under ${d.schedule}: ${d.digest ?? `failed: ${d.err.trim().split('\n').pop()}`}\n`);
  process.stdout.write(`${same ? 'ok' : 'not ok'} - the digest workload gives bit-identical results under every thread order\n`);
  if (same) passed += 1;
  else failed += 1;
  console.log(`\n${passed} passed, ${failed} failed`);
  process.exitCode = failed ? 1 : 0;
}

main();
