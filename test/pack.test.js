'use strict';
// The package as users get it: `npm pack`, then `npm install` of the tarball into an empty project,
// once with a PATH holding only node and npm (the prebuilt binary must be enough), once with the
// source build forced (node-gyp, compilers present). The addon that loads must compute the reference.
const test = require('tape');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { fixture, golden, tinyModel } = require('./helpers/fixtures');
const h = require('./helpers/pack');
const { unexpectedLibraries } = require('../scripts/native-check');

const prebuilt = path.join(h.prebuiltDir, 'evit.node');
const manifest = fs.existsSync(path.join(h.prebuiltDir, 'evit.json'))
  ? JSON.parse(fs.readFileSync(path.join(h.prebuiltDir, 'evit.json'), 'utf8'))
  : null;
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'evit-pack-'));
const example = path.join(h.root, 'examples', 'shapes.png');
const npy = fixture('input-224.npy');
const fused = golden.cases.find((c) => c.name === 'keep0.7-fused');
const noGpuDriver = !fs.existsSync('/proc/driver/nvidia/version');

test.onFinish(() => fs.rmSync(work, { recursive: true, force: true }));

/** One script, run both as CommonJS and as ESM: load the tiny checkpoint, run the golden batch, report. */
function apiScript(kind, options) {
  const load = kind === 'cjs' ? "const evit = require('evit');" : "import * as evit from 'evit';";
  const body = `
    const input = await evit.readNpy(${JSON.stringify(npy)});
    const model = await evit.loadModel(${JSON.stringify(tinyModel)}, ${JSON.stringify(options)});
    const out = await model.forward(input);
    const result = { logits: Array.from(out.logits), kept: out.kept.map((k) => Array.from(k.tokens)), backend: model.backend,
      info: evit.backendInfo(), named: typeof evit.WeightsError === 'function' && typeof evit.keepSchedule === 'function' };
    model.dispose();
    console.log(JSON.stringify(result));`;
  return kind === 'cjs' ? `${load}\n(async () => {${body}})().catch((e) => { console.error(e.stack); process.exit(1); });` : `${load}\n${body}`;
}

function runApi(t, app, env, kind, options = { numHeads: 3, keepRate: 0.7, fuse: true }) {
  const args = kind === 'cjs' ? ['-e', apiScript('cjs', options)] : ['--input-type=module', '-e', apiScript('esm', options)];
  const r = h.nodeJson(app, args, env);
  t.ok(r.ok, `${kind === 'cjs' ? 'require' : 'import'}('evit') loads and runs a batch${r.ok ? '' : `\n${r.stderr}`}`);
  if (!r.ok) return null;
  const v = r.value;
  fused.logits.forEach((want, b) => {
    const d = h.maxAbsDiff(v.logits.slice(b * want.length, (b + 1) * want.length), want);
    t.ok(d < 1e-4, `${kind}: image ${b} logits match the float64 reference (max diff ${d.toExponential(2)})`);
  });
  t.deepEqual(v.kept, fused.kept.map((k) => k.tokens.flat()), `${kind}: kept tokens match the reference`);
  t.ok(v.named, `${kind}: named exports`);
  return v;
}

function checkClassifyCli(t, app, env) {
  // The CLI on the bundled model when the package has one, and on the test checkpoint with the goldens always.
  if (fs.existsSync(h.bundledModel)) {
    const sneaker = path.join(h.root, 'examples', 'sneaker.png');
    const image = fs.existsSync(sneaker) ? sneaker : example;
    const r = spawnSync('npx', ['evit', 'classify', '--json', image], { cwd: app, encoding: 'utf8', env });
    t.equal(r.status, 0, `npx evit classify ${path.basename(image)}: the bundled model${r.status ? `\n${r.stderr}` : ''}`);
    if (r.status === 0) {
      const [res] = JSON.parse(r.stdout).results;
      const { labels } = JSON.parse(fs.readFileSync(path.join(path.dirname(h.bundledModel), 'config.json'), 'utf8'));
      t.equal(res.logits.length, labels.length, 'one logit per class of the bundled model');
      if (image === sneaker) t.equal(res.top[0].label, 'Sneaker', 'the bundled model calls sneaker.png a Sneaker');
    }
  }
  const r = spawnSync('npx', ['evit', 'classify', '--weights', tinyModel, '--heads', '3', '--json', npy, example], {
    cwd: app, encoding: 'utf8', env,
  });
  t.equal(r.status, 0, `npx evit classify --weights tiny-evit.safetensors input-224.npy shapes.png${r.status ? `\n${r.stderr}` : ''}`);
  if (r.status !== 0) return;
  const { results } = JSON.parse(r.stdout);
  t.equal(results.length, 3, 'two .npy images and the example PNG');
  fused.logits.forEach((want, b) => {
    const d = h.maxAbsDiff(results[b].logits, want);
    t.ok(d < 1e-4, `cli: image ${b} logits match the float64 reference (max diff ${d.toExponential(2)})`);
  });
  t.equal(results[2].input, example);
  t.equal(results[2].logits.length, golden.model.numClasses, 'the example image is classified');
}

let tarball = null;

/** realpath, or the path itself when it does not exist (the assertion then reports it). */
function realpath(file) {
  try {
    return fs.realpathSync(file);
  } catch {
    return file;
  }
}

test('npm pack holds the runtime, the prebuilt addon and the sources for a rebuild; no tests or tools', (t) => {
  t.ok(fs.existsSync(prebuilt), `${path.relative(h.root, prebuilt)} exists (made by \`npm run prebuilds\`)`);
  if (!fs.existsSync(prebuilt)) return t.end();
  t.deepEqual(unexpectedLibraries(prebuilt), [], 'the prebuilt addon needs no shared library beyond glibc and libstdc++');
  t.equal(manifest?.napi, require('../package.json').binary.napi_versions[0], 'built for the N-API version package.json states');
  const { tarball: file, info } = h.pack(work);
  tarball = file;
  const files = info.files.map((f) => f.path);
  const has = (p) => files.includes(p);
  for (const p of ['package.json', 'README.md', 'LICENSE', 'dist/index.js', 'dist/index.d.ts', 'dist/cli.js', 'dist/native/index.js',
    `prebuilds/${process.platform}-${process.arch}/evit.node`, 'scripts/install.js', 'binding.gyp', 'src/binding/addon.cc'])
    t.ok(has(p), `ships ${p}`);
  for (const prefix of ['src/testing/', 'cuda/testing/'])
    t.notOk(files.some((f) => f.startsWith(prefix)), `no test exports' sources (${prefix})`);
  const flavour = spawnSync(process.execPath, ['-e', 'process.stdout.write(String("testing" in require(process.argv[1])))', prebuilt],
    { encoding: 'utf8' });
  t.equal(flavour.stdout, 'false', 'the prebuilt addon is the production flavour: no binding.testing');
  if (fs.existsSync(h.bundledModel)) t.ok(has('models/fashion-mnist/model.safetensors'), 'ships the bundled model');
  for (const prefix of ['test/', 'tools/', 'bench/', 'lib/', 'docs/', 'build/', 'build-prebuild/', 'node_modules/', '.ci/'])
    t.notOk(files.some((f) => f.startsWith(prefix)), `nothing under ${prefix}`);
  t.notOk(files.some((f) => f.startsWith('scripts/') && f !== 'scripts/install.js'), 'only the install script from scripts/');
  t.comment(`tarball ${(info.size / 2 ** 20).toFixed(1)} MiB, unpacked ${(info.unpackedSize / 2 ** 20).toFixed(1)} MiB, ${info.entryCount} files`);
  t.end();
});

test('installs and runs with only node and npm on PATH: the prebuilt addon, no compiler', (t) => {
  if (!tarball) return t.end();
  const dir = path.join(work, 'no-compiler');
  const bin = h.nodeOnlyBin(dir);
  // npm runs install scripts through `sh`; name it by path, so that PATH can stay node and npm only.
  const env = h.userEnv(path.join(dir, 'home'), { PATH: bin, npm_config_script_shell: '/bin/sh' });
  t.deepEqual(fs.readdirSync(bin).sort(), ['node', 'npm', 'npx'], 'PATH is one directory holding node, npm and npx');
  const onPath = (tool) => env.PATH.split(path.delimiter).some((d) => fs.existsSync(path.join(d, tool)));
  t.deepEqual(['cc', 'gcc', 'g++', 'c++', 'make', 'cmake', 'nvcc', 'python3', 'python'].filter(onPath), [], 'no compiler, make, cmake, nvcc or python');
  const install = h.installInto(dir, 'app', tarball, env);
  t.equal(install.status, 0, `npm install of the tarball succeeds${install.status === 0 ? '' : `\n${install.failure}`}`);
  if (install.status !== 0) return t.end();
  t.match(install.output, /evit: using the prebuilt binary \S+\/prebuilds\/linux-x64\/evit\.node/, 'the install script chose the prebuilt binary');
  const pkg = path.join(install.app, 'node_modules', 'evit');
  t.notOk(fs.existsSync(path.join(pkg, 'build')), 'no source build happened');

  checkClassifyCli(t, install.app, env);
  const cjs = runApi(t, install.app, env, 'cjs');
  runApi(t, install.app, env, 'esm');
  if (cjs) {
    const { addon, cuda } = cjs.info;
    t.equal(addon.source, 'prebuilt', 'backendInfo().addon: the prebuilt binary');
    t.equal(realpath(addon.file), realpath(path.join(pkg, 'prebuilds', 'linux-x64', 'evit.node')), 'from the installed package');
    t.equal(cuda.compiled, manifest?.cuda, `CUDA backend compiled in: ${cuda.compiled} (prebuilt with${manifest?.cuda ? '' : 'out'} nvcc)`);
    if (noGpuDriver) {
      t.equal(cuda.available, false, 'no GPU driver here: CUDA is not available');
      t.ok(typeof cuda.reason === 'string' && cuda.reason.length > 0, `and says why: ${cuda.reason}`);
      t.equal(cjs.backend, 'cpu', 'the model runs on the CPU backend');
    } else {
      t.comment('a GPU driver is present: the no-driver checks do not apply on this machine');
    }
  }
  // Forcing the CPU backend: the loadModel option and the environment variable.
  const viaOption = runApi(t, install.app, env, 'cjs', { numHeads: 3, device: 'cpu' });
  t.equal(viaOption?.backend, 'cpu', "device: 'cpu' runs on the CPU backend");
  const viaEnv = runApi(t, install.app, { ...env, EVIT_DEVICE: 'cpu' }, 'cjs');
  t.equal(viaEnv?.backend, 'cpu', 'EVIT_DEVICE=cpu runs on the CPU backend');
  if (noGpuDriver) {
    // Only visible without a GPU: the installed package reads EVIT_DEVICE, and asking for CUDA fails clearly.
    const src = `require('evit').loadModel(${JSON.stringify(tinyModel)}, { numHeads: 3 })
      .then(() => console.log('null'), (e) => console.log(JSON.stringify({ name: e.name, code: e.code, message: e.message })));`;
    const r = h.nodeJson(install.app, ['-e', src], { ...env, EVIT_DEVICE: 'cuda' });
    t.equal(r.value?.name, 'DeviceError', `EVIT_DEVICE=cuda without a GPU: ${r.value?.message ?? r.stderr}`);
  }
  t.end();
});

test('npm_config_build_from_source=true builds with node-gyp (compilers present) and uses that build', (t) => {
  if (!tarball) return t.end();
  const dir = path.join(work, 'from-source');
  // The Node running the tests comes first on PATH, so the install and the build use it too.
  const PATH = [h.nodeOnlyBin(dir), process.env.PATH].join(path.delimiter);
  const env = h.userEnv(path.join(dir, 'home'), { PATH, npm_config_build_from_source: 'true' });
  const install = h.installInto(dir, 'app', tarball, env);
  t.equal(install.status, 0, `npm install of the tarball succeeds${install.status === 0 ? '' : `\n${install.failure}`}`);
  if (install.status !== 0) return t.end();
  t.match(install.output, /evit: build from source requested/, 'the install script saw the request');
  t.match(install.output, /evit: building the native addon from source with (node-gyp|cmake-js)/, 'and built');
  const pkg = path.join(install.app, 'node_modules', 'evit');
  const built = path.join(pkg, 'build', 'Release', 'evit.node');
  t.ok(fs.existsSync(built), 'build/Release/evit.node exists in the installed package');

  checkClassifyCli(t, install.app, env);
  const cjs = runApi(t, install.app, env, 'cjs');
  runApi(t, install.app, env, 'esm');
  if (cjs) {
    t.equal(cjs.info.addon.source, 'build', 'backendInfo().addon: the local build');
    t.equal(realpath(cjs.info.addon.file), realpath(built), 'the one just built, not the prebuilt binary');
  }
  t.end();
});
