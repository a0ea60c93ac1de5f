#!/usr/bin/env node
'use strict';
// `npm run prebuilds`: builds the release addon that ships in the package, into prebuilds/<platform>-<arch>/.
// CPU backend always; CUDA backend too when nvcc is found (cudart linked statically), unless --cpu-only.
// The build runs in its own cmake-js output directory so it never disturbs build/ of a working checkout.
// `--check` (run by prepack) refuses to pack a missing, stale or narrowed (EVIT_CUDA_ARCHITECTURES) binary.
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { unexpectedLibraries, newestSymbolVersion, probeAddon } = require('./native-check');

const root = path.resolve(__dirname, '..');
const target = `${process.platform}-${process.arch}`;
const outDir = path.join(root, 'build-prebuild');
const destDir = path.join(root, 'prebuilds', target);
const dest = path.join(destDir, 'evit.node');
const manifestFile = path.join(destDir, 'evit.json');
const USAGE = 'usage: node scripts/prebuild.js [--cpu-only | --check]';

function main(args) {
  const unknown = args.filter((a) => a !== '--cpu-only' && a !== '--check');
  if (unknown.length) fail(`unknown argument ${unknown[0]}; ${USAGE}`);
  if (args.includes('--check')) return checkRelease();
  if (process.platform !== 'linux' || process.arch !== 'x64')
    fail(`prebuilt binaries are made for linux-x64 only, this is ${target}`);
  if (process.report.getReport().header.glibcVersionRuntime === undefined)
    fail('prebuilt binaries are made on a glibc system (this one uses another C library, e.g. musl)');
  build(args.includes('--cpu-only'));
}

function build(cpuOnly) {
  const cmakeJs = require.resolve('cmake-js/bin/cmake-js', { paths: [root] });
  const common = ['--config', 'Release', '--out', outDir];
  const cudaArchitectures = cpuOnly ? null : process.env.EVIT_CUDA_ARCHITECTURES || releaseCudaArchitectures();
  // The shipped binary is the production flavour: no binding.testing.
  const defines = ['--CDEVIT_TESTING=OFF', ...(cpuOnly ? ['--CDEVIT_CUDA=OFF'] : ['--CDEVIT_CUDA=ON', `--CDCMAKE_CUDA_ARCHITECTURES=${cudaArchitectures}`])];
  log(`building ${target} (${cpuOnly ? 'CPU only' : 'CPU, and CUDA when nvcc is found'}) in ${path.relative(root, outDir)}/`);
  const started = Date.now();
  // Configure every time, so the options above replace whatever an earlier run cached; the build is incremental.
  for (const step of [['configure', ...common, ...defines], ['build', ...common, '--parallel', String(os.availableParallelism())]]) {
    const r = spawnSync(process.execPath, [cmakeJs, ...step], { cwd: root, stdio: 'inherit' });
    if (r.status !== 0) fail(`cmake-js ${step[0]} failed (exit ${r.status ?? r.signal})`);
  }
  const built = path.join(outDir, 'Release', 'evit.node');
  if (!fs.existsSync(built)) fail(`the build finished but ${built} is missing`);

  const extra = unexpectedLibraries(built);
  if (extra.length) fail(`${built} needs ${extra.join(', ')} at run time; a prebuilt addon may need only glibc and libstdc++`);

  fs.mkdirSync(destDir, { recursive: true });
  // require() treats a file as an addon by its .node extension.
  const staging = path.join(destDir, `evit.tmp-${process.pid}.node`);
  fs.copyFileSync(built, staging);
  // The local symbol table (OpenBLAS internals) is of no use to users; the dynamic symbols stay.
  spawnSync('strip', ['--strip-unneeded', staging], { stdio: 'inherit' });
  const probe = probeAddon(staging);
  if (!probe.ok) {
    fs.rmSync(staging, { force: true });
    fail(`the built addon does not load: ${probe.error}`);
  }
  fs.renameSync(staging, dest);

  const cuda = probe.info.cuda.compiled;
  const manifest = {
    platform: target,
    libc: 'glibc',
    glibc: newestSymbolVersion(dest, 'GLIBC'),
    glibcxx: newestSymbolVersion(dest, 'GLIBCXX'),
    napi: napiVersion(),
    cuda,
    cpuOnly,
    cudaRuntime: cuda ? probe.info.cuda.runtimeVersion : null,
    cudaArchitectures: cuda ? cudaArchitectures.split(';') : null,
    bytes: fs.statSync(dest).size,
  };
  fs.writeFileSync(manifestFile, JSON.stringify(manifest, null, 2) + '\n');
  log(
    `${path.relative(root, dest)}: ${(manifest.bytes / 2 ** 20).toFixed(1)} MiB, ` +
      `${cuda ? `CUDA backend for ${cudaArchitectures}` : 'no CUDA backend'}, ` +
      `needs glibc >= ${manifest.glibc} and libstdc++ with GLIBCXX_${manifest.glibcxx}; ${((Date.now() - started) / 1000).toFixed(0)} s`,
  );
}

/** Before `npm pack`: the binary exists, matches the sources, and is the release build, not a test one. */
function checkRelease() {
  if (!fs.existsSync(dest) || !fs.existsSync(manifestFile))
    fail(`${path.relative(root, dest)} is missing: run \`npm run prebuilds\` before packing`);
  const m = JSON.parse(fs.readFileSync(manifestFile, 'utf8'));
  const problems = [];
  if (m.napi !== napiVersion()) problems.push(`built for N-API ${m.napi}, package.json says ${napiVersion()}`);
  const nvcc = spawnSync('nvcc', ['--version'], { stdio: 'ignore' }).status === 0;
  if (!m.cuda && !m.cpuOnly && nvcc) problems.push('built without the CUDA backend although nvcc is here');
  const archs = Array.isArray(m.cudaArchitectures) ? m.cudaArchitectures.join(';') : 'an unrecorded GPU list';
  if (m.cuda && archs !== releaseCudaArchitectures())
    problems.push(`CUDA code for ${archs} only (EVIT_CUDA_ARCHITECTURES); the release list is ${releaseCudaArchitectures()}`);
  const built = fs.statSync(dest).mtimeMs;
  const newer = ['src', 'cuda', 'CMakeLists.txt'].flatMap((p) => newerFiles(path.join(root, p), built));
  if (newer.length) problems.push(`older than ${newer.slice(0, 3).map((f) => path.relative(root, f)).join(', ')}${newer.length > 3 ? ', ...' : ''}`);
  if (problems.length) fail(`${path.relative(root, dest)} is not fit to ship: ${problems.join('; ')}. Run \`npm run prebuilds\`.`);
  log(`${path.relative(root, dest)} is the release build (${m.cuda ? `CUDA ${archs}` : 'CPU only'}, glibc >= ${m.glibc})`);
}

function newerFiles(p, than) {
  if (!fs.existsSync(p)) return [];
  const st = fs.statSync(p);
  if (!st.isDirectory()) return st.mtimeMs > than ? [p] : [];
  return fs.readdirSync(p).flatMap((f) => newerFiles(path.join(p, f), than));
}

/**
 * The GPU list CMakeLists.txt sets as its default, passed explicitly: CMake fills CMAKE_CUDA_ARCHITECTURES
 * with nvcc's own default before CMakeLists.txt runs, so a release must not rely on the fallback there.
 */
function releaseCudaArchitectures() {
  const text = fs.readFileSync(path.join(root, 'CMakeLists.txt'), 'utf8');
  const m = /set\(CMAKE_CUDA_ARCHITECTURES\s+([^)]+)\)/.exec(text);
  if (!m) fail('CMakeLists.txt sets no CMAKE_CUDA_ARCHITECTURES list; name the GPUs in EVIT_CUDA_ARCHITECTURES');
  return m[1].trim().split(/\s+/).join(';');
}

function napiVersion() {
  return Number(JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')).binary.napi_versions[0]);
}

function log(msg) {
  process.stderr.write(`prebuild: ${msg}\n`);
}

function fail(msg) {
  log(`error: ${msg}`);
  process.exit(1);
}

main(process.argv.slice(2));
