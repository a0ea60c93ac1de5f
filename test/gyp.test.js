'use strict';
// binding.gyp is the CPU-only source build for machines without cmake: it must list the
// same C++ sources as CMakeLists.txt and produce an addon that passes the parity tests.
const test = require('tape');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');

const root = path.join(__dirname, '..');

function cmakeSources() {
  const text = fs.readFileSync(path.join(root, 'CMakeLists.txt'), 'utf8');
  const list = (name) => new RegExp(`set\\(${name}([\\s\\S]*?)\\)`).exec(text)[1].split(/\s+/).filter((s) => s.endsWith('.cc'));
  // Every build's sources plus the stubs a build without nvcc uses in place of cuda/.
  return [...list('EVIT_SOURCES'), ...list('EVIT_NO_CUDA_SOURCES')].sort();
}

test('binding.gyp lists the C++ sources CMakeLists.txt builds for the CPU', (t) => {
  const gyp = JSON.parse(fs.readFileSync(path.join(root, 'binding.gyp'), 'utf8'));
  t.deepEqual([...gyp.targets[0].sources].sort(), cmakeSources());
  t.end();
});

test('node-gyp builds a CPU-only addon that matches the reference', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'evit-gyp-'));
  try {
    // src/ only: the CPU-only build needs nothing of cuda/ (nor of src/testing, which it does not compile).
    fs.cpSync(path.join(root, 'src'), path.join(dir, 'src'), { recursive: true, filter: (f) => !f.includes(`${path.sep}testing`) });
    for (const f of ['binding.gyp', 'package.json']) fs.copyFileSync(path.join(root, f), path.join(dir, f));
    fs.symlinkSync(path.join(root, 'node_modules'), path.join(dir, 'node_modules'));
    const gyp = require.resolve('node-gyp/bin/node-gyp.js');
    // Build against this Node's own headers when it has them: nothing to download.
    const prefix = path.resolve(process.execPath, '..', '..');
    const nodedir = process.env.npm_config_nodedir ||
      (fs.existsSync(path.join(prefix, 'include', 'node', 'common.gypi')) ? prefix : null);
    const args = [gyp, 'rebuild', '-j', String(os.availableParallelism()), ...(nodedir ? [`--nodedir=${nodedir}`] : [])];
    const build = spawnSync(process.execPath, args, { cwd: dir, encoding: 'utf8' });
    t.equal(build.status, 0, 'node-gyp rebuild succeeds' + (build.status ? `\n${build.stderr.slice(-2000)}` : ''));
    const addon = path.join(dir, 'build', 'Release', 'evit.node');
    const info = spawnSync(process.execPath, ['-e', 'const b = require(process.argv[1]); console.log(JSON.stringify({ cuda: b.backendInfo().cuda, testing: "testing" in b }))', addon], { encoding: 'utf8' });
    t.equal(info.status, 0, info.stderr);
    const { cuda, testing } = JSON.parse(info.stdout);
    t.equal(testing, false, 'the source build is the production flavour: no binding.testing');
    t.equal(cuda.compiled, false, 'no CUDA in the gyp build');
    t.match(cuda.reason, /without nvcc/);
    const parity = spawnSync(process.execPath, [path.join(__dirname, 'parity.test.js')], {
      encoding: 'utf8',
      env: { ...process.env, EVIT_BINDING: addon },
    });
    const fail = Number((/^# fail\s+(\d+)/m.exec(parity.stdout) || [])[1] || 0);
    const pass = Number((/^# pass\s+(\d+)/m.exec(parity.stdout) || [])[1] || 0);
    t.equal(parity.status, 0, 'parity tests pass with the gyp build');
    t.ok(pass > 50 && fail === 0, `${pass} parity assertions passed, ${fail} failed`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  t.end();
});
