'use strict';
// Runs an emulator test program from a tape test: builds it (cached), runs it, and turns
// each of its "ok N - what" lines into one assertion, so `npm test` counts its checks.
const { spawnSync } = require('node:child_process');
const { buildProgram } = require('./build');

/** Builds `spec` (see build.js) or fails the test with the compiler's message. */
async function build(t, spec) {
  const b = await buildProgram(spec);
  if (b.error) t.fail(`${spec.name}: build failed:\n${b.error}`);
  else t.comment(`${spec.name}: built in ${b.seconds.toFixed(1)} s (${b.compiled} objects compiled, the rest cached)`);
  return b.exe;
}

/** Runs exe; every check line becomes t.ok; the exit status must be 0. Returns the result. */
function runChecks(t, exe, { args = [], env = {}, timeout = 600e3, label = '', minChecks = 1 } = {}) {
  const started = Date.now();
  const r = spawnSync(exe, args, { encoding: 'utf8', timeout, env: { ...process.env, ...env }, maxBuffer: 64 << 20 });
  const lines = (r.stdout || '').split('\n').filter((l) => /^(not )?ok \d+ - /.test(l));
  const prefix = label ? `${label}: ` : '';
  for (const l of lines) t.ok(l.startsWith('ok'), prefix + l.replace(/^(not )?ok \d+ - /, ''));
  t.ok(lines.length >= minChecks, `${prefix}${lines.length} checks ran`);
  const tail = (r.stderr || '').trim().split('\n').filter((l) => !l.startsWith('evit-simt: kernel fault')).slice(-8).join('\n');
  t.equal(r.status, 0, `${prefix}the program exits cleanly${r.signal ? ` (signal ${r.signal})` : ''}${r.status && tail ? `:\n${tail}` : ''}`);
  t.comment(`${prefix}ran in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  return r;
}

module.exports = { build, runChecks };
