#!/usr/bin/env node
'use strict';
// npm install script. Does nothing when an addon already loads (the prebuilt binary, normally);
// otherwise builds one from source: cmake-js when cmake and cmake-js are at hand (CPU + CUDA when nvcc
// is found), else node-gyp with binding.gyp (CPU only). `npm install --build-from-source` (or
// npm_config_build_from_source=true) skips the prebuilt binary and always builds.
const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');

const root = path.resolve(__dirname, '..');
const loader = path.join(root, 'dist', 'native', 'index.js');

function log(msg) {
  process.stderr.write(`evit: ${msg}\n`);
}

/** npm passes --build-from-source as npm_config_build_from_source: `true`, or a list of package names. */
function buildFromSourceForced(env = process.env) {
  const v = (env.npm_config_build_from_source ?? '').trim().toLowerCase();
  if (v === '' || v === 'false' || v === '0') return false;
  return v === 'true' || v === '1' || v.split(',').map((s) => s.trim()).includes('evit');
}

/** Loads the addon the way the package will, in a child process; {ok, addon, cuda} or {ok: false, error}. */
function probe() {
  if (!fs.existsSync(loader)) return { ok: false, error: `${path.relative(root, loader)} is missing (the TypeScript is not built)` };
  const src = `try {
      const n = require(${JSON.stringify(loader)});
      const b = n.loadBinding().backendInfo();
      process.stdout.write(JSON.stringify({ addon: n.addonInfo(), cuda: b.cuda }));
    } catch (err) {
      process.stderr.write(err.message);
      process.exitCode = 1;
    }`;
  const r = spawnSync(process.execPath, ['-e', src], { cwd: root, encoding: 'utf8', timeout: 60_000 });
  if (r.status !== 0) return { ok: false, error: (r.stderr || `exit ${r.status ?? r.signal}`).trim() };
  return { ok: true, ...JSON.parse(r.stdout) };
}

function describe(p) {
  const cuda = p.cuda.compiled ? `CUDA backend compiled in, ${p.cuda.available ? 'a GPU is available' : `not usable here: ${p.cuda.reason}`}` : 'CPU backend only';
  return `${p.addon.source === 'prebuilt' ? 'prebuilt binary' : p.addon.source === 'build' ? 'local build' : 'EVIT_BINDING'} ${p.addon.file} (${cuda})`;
}

function onPath(cmd) {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (!dir) continue;
    const file = path.join(dir, cmd);
    try {
      fs.accessSync(file, fs.constants.X_OK);
      return file;
    } catch {
      // not in this directory
    }
  }
  return null;
}

function resolveFrom(id) {
  try {
    return require.resolve(id, { paths: [root] });
  } catch {
    return null;
  }
}

/** What the source build needs and this machine lacks, each with the Debian/Ubuntu package that provides it. */
function missingPrerequisites({ python = true } = {}) {
  const missing = [];
  const cxx = process.env.CXX ? onPath(process.env.CXX.split(/\s+/)[0]) ?? (fs.existsSync(process.env.CXX) ? process.env.CXX : null) : onPath('c++') ?? onPath('g++');
  if (!cxx) missing.push(['a C++17 compiler (c++ or g++)', 'g++']);
  if (!onPath('make')) missing.push(['make', 'make']);
  if (python && !onPath('python3') && !onPath('python')) missing.push(['python3 (node-gyp runs on it)', 'python3']);
  // binding.gyp and CMakeLists.txt link Debian's static OpenBLAS (pthread variant).
  const blasHeader = ['/usr/include/x86_64-linux-gnu/openblas-pthread/cblas.h', '/usr/include/openblas/cblas.h'].some((f) => fs.existsSync(f));
  const blasLib = ['/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.a', '/usr/lib/x86_64-linux-gnu/libopenblas.a'].some((f) => fs.existsSync(f));
  if (!blasHeader || !blasLib) missing.push(['OpenBLAS headers and static library', 'libopenblas-dev']);
  return missing;
}

/** Node's headers, when they are installed next to this Node (Debian's nodejs, official tarballs): no download. */
function localNodedir() {
  if (process.env.npm_config_nodedir) return process.env.npm_config_nodedir;
  const prefix = path.resolve(process.execPath, '..', '..');
  return fs.existsSync(path.join(prefix, 'include', 'node', 'common.gypi')) ? prefix : null;
}

function buildFromSource() {
  const cmakeJs = onPath('cmake') ? resolveFrom('cmake-js/bin/cmake-js') : null;
  const missing = missingPrerequisites({ python: !cmakeJs });
  if (missing.length) {
    log('cannot build the native addon from source; missing:');
    for (const [what] of missing) log(`  - ${what}`);
    log(`On Debian/Ubuntu: sudo apt-get install ${[...new Set(missing.map(([, pkg]) => pkg))].join(' ')}`);
    log('Prebuilt binaries ship for linux-x64 with glibc; see docs/INSTALL.md in the evit repository.');
    return 1;
  }
  let cmd;
  if (cmakeJs) {
    log('building the native addon from source with cmake-js (CPU, and CUDA when nvcc is found)');
    cmd = [process.execPath, [cmakeJs, 'compile', '--config', 'Release']];
  } else {
    const gyp = process.env.npm_config_node_gyp || resolveFrom('node-gyp/bin/node-gyp.js');
    const nodedir = localNodedir();
    const args = ['rebuild', '--jobs=max', ...(nodedir ? [`--nodedir=${nodedir}`] : [])];
    log('building the native addon from source with node-gyp (CPU backend only)');
    cmd = gyp ? [process.execPath, [gyp, ...args]] : onPath('node-gyp') ? ['node-gyp', args] : null;
    if (!cmd) {
      log('cannot build from source: node-gyp was not found (npm ships it; run the install through npm)');
      return 1;
    }
  }
  const r = spawnSync(cmd[0], cmd[1], { cwd: root, stdio: 'inherit' });
  if (r.status !== 0) {
    log(`the source build failed (exit ${r.status ?? r.signal}); its output is above`);
    return 1;
  }
  const p = probe();
  if (!p.ok) {
    log(`the source build finished but the addon does not load:\n${p.error}`);
    return 1;
  }
  log(`built and using the ${describe(p)}`);
  return 0;
}

function main() {
  const forced = buildFromSourceForced();
  if (!forced) {
    const p = probe();
    if (p.ok) {
      log(`using the ${describe(p)}`);
      return 0;
    }
    // A working checkout builds with `npm run build` (scripts/setup.sh), not on every `npm ci`.
    if (fs.existsSync(path.join(root, 'tsconfig.json')) && fs.existsSync(path.join(root, 'lib'))) {
      log('no usable addon in this checkout yet; build it with `npm run build` (or ./scripts/setup.sh)');
      return 0;
    }
    log(`no prebuilt binary loads here:\n${p.error.replace(/^/gm, '  ')}`);
  } else {
    log('build from source requested (npm_config_build_from_source)');
  }
  return buildFromSource();
}

if (require.main === module) process.exitCode = main();

module.exports = { buildFromSourceForced, missingPrerequisites };
