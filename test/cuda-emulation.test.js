'use strict';
// The CUDA backend's host code (cuda/cuda_model.cu, execution_context.cu, device_arena.cu,
// device_weights.cu) compiled as C++ against test/native/fake_cuda: a host-only CUDA runtime
// whose kernels are the CPU ops. Runs on machines without a GPU (CI), and checks the whole
// orchestration against the CPU backend: buffers, plans, kept origins, chunking, graph capture
// and replay, profile slots, concurrent passes, and the error paths. The kernels themselves are
// checked on a GPU by test/gpu/.
const test = require('tape');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawn, spawnSync } = require('node:child_process');

const root = path.join(__dirname, '..');
const CXX = process.env.CXX || 'g++';
const OPENBLAS = ['/usr/include/x86_64-linux-gnu/openblas-pthread', '/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.a'];
const FLAGS = ['-std=c++17', '-O1', '-Wall', '-I', path.join(root, 'test/native/fake_cuda'), '-I', OPENBLAS[0]];
const CUDA_HOST = ['cuda_model.cu', 'execution_context.cu', 'device_arena.cu', 'device_weights.cu'].map((f) => path.join(root, 'cuda', f));
const sources = [
  ...CUDA_HOST,
  ...['plan.cc', 'host_weights.cc'].map((f) => path.join(root, 'src/backend', f)),
  ...fs.readdirSync(path.join(root, 'src/cpu')).filter((f) => f.endsWith('.cc')).map((f) => path.join(root, 'src/cpu', f)),
  ...['fake_cuda/fake_runtime.cc', 'fake_cuda/fake_kernels.cc', 'cuda_model_emulated.cc'].map((f) => path.join(root, 'test/native', f)),
];

/** Everything the build reads, hashed: the cache directory of its objects. */
function buildKey() {
  const h = crypto.createHash('sha256').update(FLAGS.join(' '));
  const walk = (dir) => fs.readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name)).forEach((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) walk(p);
    else if (/\.(cc|cu|h|cuh)$/.test(e.name)) h.update(p).update(fs.readFileSync(p));
  });
  for (const d of ['src', 'cuda', 'test/native']) walk(path.join(root, d));
  return h.digest('hex').slice(0, 16);
}

function compile(src, obj) {
  // .cu files are plain host C++ here: fake_cuda stands in for the runtime and the kernels.
  const args = [...FLAGS, ...(src.endsWith('.cu') ? ['-x', 'c++'] : []), '-c', src, '-o', obj];
  return new Promise((resolve) => {
    const p = spawn(CXX, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    p.stderr.on('data', (d) => { err += d; });
    p.on('close', (code) => resolve(code === 0 ? null : `${path.relative(root, src)}: ${err.slice(-1500)}`));
    p.on('error', (e) => resolve(`${CXX}: ${e.message}`));
  });
}

async function build() {
  const dir = path.join(os.tmpdir(), `evit-cuda-emulation-${buildKey()}`);
  const exe = path.join(dir, 'cuda_model_emulated');
  if (fs.existsSync(exe)) return { exe };
  fs.mkdirSync(dir, { recursive: true });
  const queue = sources.map((src, i) => ({ src, obj: path.join(dir, `${i}-${path.basename(src)}.o`) }));
  const errors = [];
  const worker = async () => {
    for (let job = queue.shift(); job; job = queue.shift()) {
      if (fs.existsSync(job.obj)) continue;
      const e = await compile(job.src, `${job.obj}.tmp`);
      if (e) errors.push(e);
      else fs.renameSync(`${job.obj}.tmp`, job.obj);
    }
  };
  await Promise.all(Array.from({ length: os.availableParallelism() }, worker));
  if (errors.length) return { error: errors.join('\n') };
  const objs = sources.map((src, i) => path.join(dir, `${i}-${path.basename(src)}.o`));
  const link = spawnSync(CXX, [...objs, OPENBLAS[1], '-lpthread', '-lm', '-o', `${exe}.tmp`], { encoding: 'utf8' });
  if (link.status !== 0) return { error: `link: ${link.stderr.slice(-1500)}` };
  fs.renameSync(`${exe}.tmp`, exe);
  return { exe };
}

test('the CUDA backend host code, on an emulated runtime, matches the CPU backend', async (t) => {
  const { exe, error } = await build();
  if (error) {
    t.fail(`build failed:\n${error}`);
    return;
  }
  const r = spawnSync(exe, { encoding: 'utf8', timeout: 600e3 });
  const lines = r.stdout.split('\n').filter((l) => /^(not )?ok \d+ - /.test(l));
  for (const l of lines) t.ok(l.startsWith('ok'), l.replace(/^(not )?ok \d+ - /, ''));
  t.ok(lines.length > 100, `${lines.length} checks ran`);
  t.equal(r.status, 0, `the emulation exits cleanly${r.stderr ? `: ${r.stderr.slice(-500)}` : ''}${r.signal ? ` (signal ${r.signal})` : ''}`);
});
