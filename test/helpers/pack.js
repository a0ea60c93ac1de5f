'use strict';
// Packs evit the way `npm publish` would and installs the tarball into empty projects, as a user would.
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');

const root = path.join(__dirname, '..', '..');
const prebuiltDir = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`);
const bundledModel = path.join(root, 'models', 'fashion-mnist', 'model.safetensors');
// A source build compiles the whole CPU backend: minutes on a small, busy machine.
const INSTALL_TIMEOUT_MS = 15 * 60_000;

/**
 * npm's own entry points: the npm running the tests, the one next to this Node (Debian's nodejs and the
 * official tarballs put it there), or the one on PATH (when this Node came without npm).
 */
function npmCli(name) {
  const onPath = (process.env.PATH ?? '').split(path.delimiter).map((d) => path.join(d, 'npm')).find((f) => fs.existsSync(f));
  const candidates = [
    process.env.npm_execpath && path.join(path.dirname(process.env.npm_execpath), `${name}-cli.js`),
    path.join(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'bin', `${name}-cli.js`),
    path.join(path.dirname(fs.realpathSync(process.execPath)), '..', 'lib', 'node_modules', 'npm', 'bin', `${name}-cli.js`),
    onPath && path.join(path.dirname(fs.realpathSync(onPath)), `${name}-cli.js`),
  ].filter(Boolean);
  const found = candidates.find((f) => fs.existsSync(f));
  if (!found) throw new Error(`cannot find ${name}-cli.js; looked at ${candidates.join(', ')}`);
  return fs.realpathSync(found);
}

/** A directory holding only node, npm and npx: a PATH with no compiler, make, cmake, nvcc or python. */
function nodeOnlyBin(dir) {
  const bin = path.join(dir, 'bin');
  fs.mkdirSync(bin, { recursive: true });
  fs.symlinkSync(process.execPath, path.join(bin, 'node'));
  for (const name of ['npm', 'npx']) {
    fs.writeFileSync(path.join(bin, name), `#!/bin/sh\nexec ${JSON.stringify(process.execPath)} ${JSON.stringify(npmCli(name))} "$@"\n`, { mode: 0o755 });
  }
  return bin;
}

/**
 * Environment for a user's shell: a private HOME (no ~/.npmrc), the existing npm cache so packages come
 * from it rather than the network, and nothing from the npm run that started the tests.
 */
function userEnv(home, extra = {}) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (/^npm_/i.test(k) || k === 'INIT_CWD' || k === 'NODE' || k.startsWith('EVIT_')) continue;
    env[k] = v;
  }
  fs.mkdirSync(home, { recursive: true });
  return {
    ...env,
    HOME: home,
    npm_config_cache: process.env.npm_config_cache || path.join(os.homedir(), '.npm'),
    npm_config_update_notifier: 'false',
    npm_config_fund: 'false',
    npm_config_audit: 'false',
    ...extra,
  };
}

/** `npm pack` of the working tree (dist/ and prebuilds/ as they are now) into dir; returns the tarball path. */
function pack(dir) {
  const r = spawnSync(process.execPath, [npmCli('npm'), 'pack', '--ignore-scripts', '--json', '--pack-destination', dir], {
    cwd: root,
    encoding: 'utf8',
    env: userEnv(path.join(dir, 'pack-home')),
  });
  if (r.status !== 0) throw new Error(`npm pack failed:\n${r.stderr}`);
  const [info] = JSON.parse(r.stdout);
  return { tarball: path.join(dir, info.filename), info };
}

/** An empty project in dir/name with the tarball installed; the install script's output is kept. */
function installInto(dir, name, tarball, env) {
  const app = path.join(dir, name);
  fs.mkdirSync(app, { recursive: true });
  fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name, version: '1.0.0', private: true }) + '\n');
  // --foreground-scripts: npm shows the install script's output (which addon it chose) instead of hiding it.
  const r = spawnSync('npm', ['install', '--prefer-offline', '--foreground-scripts', '--no-package-lock', tarball], {
    cwd: app,
    encoding: 'utf8',
    env,
    timeout: INSTALL_TIMEOUT_MS,
  });
  const output = `${r.stdout}\n${r.stderr}`;
  const failure = r.error ? `${r.error.message} (after ${INSTALL_TIMEOUT_MS / 1000} s at most)\n${output.slice(-4000)}` : output.slice(-4000);
  return { app, status: r.status, output, failure };
}

/** Runs node with the given args in the project, returning parsed JSON stdout (or the failure). */
function nodeJson(app, args, env) {
  const r = spawnSync('node', args, { cwd: app, encoding: 'utf8', env, timeout: 120_000 });
  if (r.status !== 0) return { ok: false, stderr: r.stderr || String(r.error) };
  return { ok: true, value: JSON.parse(r.stdout) };
}

/** Largest absolute difference between two equal-length number lists. */
function maxAbsDiff(a, b) {
  if (a.length !== b.length) return Infinity;
  return a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);
}

module.exports = { root, prebuiltDir, bundledModel, npmCli, nodeOnlyBin, userEnv, pack, installInto, nodeJson, maxAbsDiff };
