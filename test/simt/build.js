'use strict';
// Builds native programs on the SIMT emulator: CUDA sources compiled as C++ against
// test/simt/include, the emulator runtime, and a test's own sources. Objects are cached
// under the system temp directory by a hash of the compiler, the flags, the source and
// every header it includes (found by following #include lines through the include
// directories), so an unchanged file is never recompiled, and a mutant copy of cuda/ only
// recompiles the file that differs. Each compiler runs in the source's root with a relative
// path, so __FILE__ (and every fault message) reads "cuda/linear_mma.cu:93".
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawn, spawnSync } = require('node:child_process');

const ROOT = path.join(__dirname, '..', '..');
const INCLUDE = path.join(__dirname, 'include');
const CXX = process.env.CXX || 'g++';
const CACHE = path.join(os.tmpdir(), 'evit-simt-cache');

/** The emulator's runtime: add these and INCLUDE (first on the path) to any build. */
const RUNTIME_SOURCES = ['fibers.cc', 'scheduler.cc', 'runtime.cc', 'memory.cc', 'streams.cc', 'twins.cc', 'kernel_names.cc', 'counting.cc']
  .map((f) => path.join(__dirname, 'src', f));
/** How nvcc sees a .cu file, as C++: device code compiled for sm_90 and the runtime header pre-included. */
const CUDA_AS_CXX = ['-x', 'c++', '-DEVIT_SIMT', '-D__CUDACC__', '-D__CUDA_ARCH__=900', '-include', 'cuda_runtime.h'];
const FLAVOURS = {
  // -O2: the kernels' inner loops dominate the run time; -ffp-contract=off: no fused multiply-adds the CUDA code does not write.
  release: { cxx: ['-O2', '-g0'], ld: [] },
  // The emulated kernels under AddressSanitizer and UBSan: the first invalid access aborts with file and line.
  asan: {
    cxx: ['-O1', '-g', '-fno-omit-frame-pointer', '-fsanitize=address,undefined', '-fno-sanitize-recover=all'],
    ld: ['-fsanitize=address,undefined'],
  },
  // Global memory traffic counted per launch (test/simt/README.md, "Counting"): the .cu files get
  // gcc's ThreadSanitizer instrumentation, whose hooks src/counting.cc defines (no libtsan is
  // linked), and device memory comes from one reserved range.
  count: {
    cxx: ['-O2', '-g0', '-DEVIT_SIMT_COUNTING'],
    cuda: ['-fsanitize=thread', '--param', 'tsan-instrument-func-entry-exit=0'],
    ld: [],
  },
};
const COMMON = ['-std=c++17', '-fPIC', '-ffp-contract=off', '-Wall', '-Wno-unknown-pragmas', '-pthread'];

let compilerId = null;
function compilerIdentity() {
  if (compilerId === null) {
    const r = spawnSync(CXX, ['--version'], { encoding: 'utf8' });
    compilerId = `${CXX} ${r.stdout || r.error}`;
  }
  return compilerId;
}

/**
 * Contents of `file` and of every header it reaches through #include, as one hash; paths
 * inside `root` count relative to it, so two copies of a tree hash alike.
 */
function dependencyHash(file, root, includeDirs, forced) {
  const h = crypto.createHash('sha256');
  const seen = new Set();
  const visit = (f) => {
    if (seen.has(f)) return;
    seen.add(f);
    const text = fs.readFileSync(f, 'utf8');
    // The emulator's headers are reached by one absolute -I in every tree.
    const rel = f.startsWith(INCLUDE + path.sep) ? `simt:${path.relative(INCLUDE, f)}` : path.relative(root, f);
    h.update(rel.startsWith('..') ? f : rel).update('\0').update(text).update('\0');
    for (const m of text.matchAll(/^\s*#\s*include\s*([<"])([^>"]+)[>"]/gm)) {
      const candidates = (m[1] === '"' ? [path.dirname(f)] : []).concat(includeDirs).map((d) => path.join(d, m[2]));
      const hit = candidates.find((c) => fs.existsSync(c));
      if (hit) visit(hit);  // not found: a system header, outside the hash
    }
  };
  for (const f of forced) visit(f);
  visit(file);
  return h.digest('hex');
}

function run(cmd, args, cwd) {
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    p.stderr.on('data', (d) => { err += d; });
    p.on('close', (code) => resolve(code === 0 ? null : err.slice(-4000) || `exit ${code}`));
    p.on('error', (e) => resolve(`${cmd}: ${e.message}`));
  });
}

/**
 * Compiles and links one program; returns { exe, compiled, seconds } or { error }.
 * root: the tree the units and relative include directories are in (the repository, or a
 * mutant copy); the compiler runs there. units: paths relative to root (.cu files compile
 * as CUDA_AS_CXX). include: include directories after test/simt/include.
 */
async function buildProgram({ name, root = ROOT, units, include = [], defines = [], flavour = 'release', libs = [] }) {
  const started = Date.now();
  const fl = FLAVOURS[flavour];
  if (!fl) throw new Error(`unknown flavour ${flavour}`);
  const forced = [path.join(INCLUDE, 'cuda_runtime.h')];
  fs.mkdirSync(CACHE, { recursive: true });
  const job = (jobRoot, rel, includes) => {
    const cuda = rel.endsWith('.cu');
    const dirs = [INCLUDE, ...includes];
    const args = [...COMMON, ...fl.cxx, ...defines.map((d) => `-D${d}`), ...dirs.map((d) => `-I${d}`),
      ...(cuda ? [...CUDA_AS_CXX, ...(fl.cuda || [])] : [])];
    const deps = dependencyHash(path.join(jobRoot, rel), jobRoot, dirs.map((d) => path.resolve(jobRoot, d)), cuda ? forced : []);
    const key = crypto.createHash('sha256').update(compilerIdentity()).update(args.join(' ')).update(rel).update(deps)
      .digest('hex').slice(0, 24);
    return { root: jobRoot, rel, args, obj: path.join(CACHE, `${key}-${path.basename(rel)}.o`) };
  };
  const jobs = [...RUNTIME_SOURCES.map((f) => job(ROOT, path.relative(ROOT, f), [])), ...units.map((u) => job(root, u, include))];
  const todo = jobs.filter((j) => !fs.existsSync(j.obj));
  const errors = [];
  const worker = async () => {
    for (let j = todo.shift(); j; j = todo.shift()) {
      const tmp = `${j.obj}.${process.pid}.tmp`;
      const e = await run(CXX, [...j.args, '-c', j.rel, '-o', tmp], j.root);
      if (e) errors.push(`${j.rel}:\n${e}`);
      else fs.renameSync(tmp, j.obj);
    }
  };
  const compiled = todo.length;
  await Promise.all(Array.from({ length: Math.max(1, os.availableParallelism()) }, worker));
  if (errors.length) return { error: errors.join('\n') };
  const ld = [...fl.ld, '-pthread', ...libs, '-ldl'];
  const exeKey = crypto.createHash('sha256').update(jobs.map((j) => j.obj).join('\n')).update(ld.join(' ')).digest('hex').slice(0, 24);
  const exe = path.join(CACHE, `${name}-${exeKey}`);
  if (!fs.existsSync(exe)) {
    const tmp = `${exe}.${process.pid}.tmp`;
    const link = spawnSync(CXX, [...jobs.map((j) => j.obj), ...ld, '-o', tmp], { encoding: 'utf8' });
    if (link.status !== 0) return { error: `link ${name}:\n${(link.stderr || '').slice(-4000)}` };
    fs.renameSync(tmp, exe);
  }
  return { exe, compiled, seconds: (Date.now() - started) / 1000 };
}

module.exports = { ROOT, INCLUDE, CACHE, RUNTIME_SOURCES, CUDA_AS_CXX, FLAVOURS, buildProgram };
