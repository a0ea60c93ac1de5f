'use strict';
// Checks a built addon the way a user's machine will see it: what it links, which glibc it needs,
// and whether a fresh Node process can load it. Shared by the prebuild script and the pack tests.
const { execFileSync, spawnSync } = require('node:child_process');
const path = require('node:path');

/** Shared libraries a prebuilt addon may need: glibc and the C++ runtime, nothing else. */
const ALLOWED_LIBS = ['linux-vdso', 'ld-linux', 'libc.so', 'libm.so', 'libstdc++.so', 'libgcc_s.so', 'libpthread.so', 'libdl.so'];

/** The NEEDED entries of an ELF file, from its dynamic section. */
function neededLibraries(file) {
  const out = execFileSync('objdump', ['-p', file], { encoding: 'utf8', maxBuffer: 16 << 20 });
  return [...out.matchAll(/^\s*NEEDED\s+(\S+)/gm)].map((m) => m[1]);
}

/** Libraries the addon needs beyond glibc and libstdc++ (empty when it is self-contained). */
function unexpectedLibraries(file) {
  return neededLibraries(file).filter((lib) => !ALLOWED_LIBS.some((a) => path.basename(lib).startsWith(a)));
}

/** The newest versioned symbol the addon takes from a library family, e.g. 'GLIBC' -> '2.34'. */
function newestSymbolVersion(file, family) {
  const out = execFileSync('objdump', ['-T', file], { encoding: 'utf8', maxBuffer: 64 << 20 });
  const versions = [...out.matchAll(new RegExp(`\\b${family}_([0-9.]+)\\b`, 'g'))].map((m) => m[1]);
  const key = (v) => v.split('.').map(Number);
  versions.sort((a, b) => {
    const x = key(a);
    const y = key(b);
    for (let i = 0; i < Math.max(x.length, y.length); i++) if ((x[i] ?? 0) !== (y[i] ?? 0)) return (x[i] ?? 0) - (y[i] ?? 0);
    return 0;
  });
  return versions.at(-1) ?? null;
}

/** Loads the addon in a child process (a crash there cannot take the caller down); returns backendInfo(). */
function probeAddon(file, env = process.env) {
  const r = spawnSync(process.execPath, ['-e', 'process.stdout.write(JSON.stringify(require(process.argv[1]).backendInfo()))', file], {
    encoding: 'utf8',
    env,
    timeout: 60_000,
  });
  if (r.status !== 0) {
    const why = (r.stderr || '').split('\n').find((l) => /Error|error:/.test(l)) || r.stderr.trim().split('\n')[0] || `exit ${r.status ?? r.signal}`;
    return { ok: false, error: why.trim() };
  }
  return { ok: true, info: JSON.parse(r.stdout) };
}

module.exports = { ALLOWED_LIBS, neededLibraries, unexpectedLibraries, newestSymbolVersion, probeAddon };
