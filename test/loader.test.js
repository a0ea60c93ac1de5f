'use strict';
// The addon loader (dist/native/) and the install script, run against package layouts made up in a
// temporary directory: which file loads, in which order, and what the error says when none does.
const test = require('tape');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const h = require('./helpers/pack');

const root = h.root;
const built = path.join(root, 'build', 'Release', 'evit.node');
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'evit-loader-'));
test.onFinish(() => fs.rmSync(work, { recursive: true, force: true }));

/** A package directory with the compiled loader and, optionally, addon files at the given relative paths. */
function layout(name, addons = {}) {
  const dir = path.join(work, name);
  fs.cpSync(path.join(root, 'dist'), path.join(dir, 'dist'), { recursive: true });
  fs.mkdirSync(path.join(dir, 'scripts'));
  fs.copyFileSync(path.join(root, 'scripts', 'install.js'), path.join(dir, 'scripts', 'install.js'));
  for (const [rel, content] of Object.entries(addons)) {
    fs.mkdirSync(path.dirname(path.join(dir, rel)), { recursive: true });
    if (content === 'addon') fs.copyFileSync(built, path.join(dir, rel));
    else fs.writeFileSync(path.join(dir, rel), content);
  }
  return dir;
}

/** Loads the addon through the package's loader in a fresh process: {addon} or {error: {name, code, message}}. */
function load(dir, env = {}) {
  const src = `
    const n = require(${JSON.stringify(path.join(dir, 'dist', 'native'))});
    try { process.stdout.write(JSON.stringify({ addon: n.addonInfo(), cpu: n.loadBinding().backendInfo().cpu.threads > 0 })); }
    catch (e) { process.stdout.write(JSON.stringify({ error: { name: e.name, code: e.code, message: e.message } })); }`;
  const r = spawnSync(process.execPath, ['-e', src], { encoding: 'utf8', env: { ...process.env, EVIT_BINDING: '', ...env } });
  if (r.status !== 0) throw new Error(r.stderr);
  return JSON.parse(r.stdout);
}

const PRE = 'prebuilds/linux-x64/evit.node';
const LOCAL = 'build/Release/evit.node';

test('the prebuilt binary loads when there is no local build', (t) => {
  const dir = layout('prebuilt-only', { [PRE]: 'addon' });
  const r = load(dir);
  t.deepEqual(r.addon && { source: r.addon.source, file: r.addon.file }, { source: 'prebuilt', file: path.join(dir, PRE) });
  t.equal(r.addon?.napi, 8, 'built for N-API 8');
  t.equal(r.addon?.nodeNapi, Number(process.versions.napi), "this Node's N-API version");
  t.ok(r.cpu, 'backendInfo() answers');
  t.end();
});

test('a local build comes first; a broken one falls back to the prebuilt binary', (t) => {
  const both = load(layout('both', { [PRE]: 'addon', [LOCAL]: 'addon' }));
  t.equal(both.addon?.source, 'build', 'the local build wins');
  const broken = load(layout('broken-local', { [PRE]: 'addon', [LOCAL]: 'not an ELF file\n' }));
  t.equal(broken.addon?.source, 'prebuilt', 'a local build that does not load is skipped');
  t.end();
});

test('nothing loads: a NativeError that lists what was tried, why, and how to build from source', (t) => {
  const dir = layout('empty');
  const { error } = load(dir);
  t.equal(error?.name, 'NativeError');
  t.equal(error?.code, 'EVIT_NATIVE');
  const msg = error?.message ?? '';
  t.match(msg, new RegExp(`for linux-x64 \\(glibc [\\d.]+\\), Node ${process.version.replace(/\./g, '\\.')} \\(N-API \\d+\\)`), 'names the platform and Node');
  t.ok(msg.includes(`local build ${path.join(dir, LOCAL)}: not found`), 'the local build: not found');
  t.ok(msg.includes(`prebuilt binary ${path.join(dir, PRE)}: not found`), 'the prebuilt binary: not found');
  t.ok(msg.indexOf(LOCAL) < msg.indexOf(PRE), 'in the order tried');
  t.match(msg, /npm_config_build_from_source=true npm rebuild evit/, 'how to build from source');
  t.match(msg, /apt-get install build-essential python3 libopenblas-dev/, 'what the build needs');
  t.end();
});

test('why a file did not load is spelled out', (t) => {
  const dir = layout('reasons', {
    [LOCAL]: 'not a binary\n'.repeat(100),
    // A real shared library that is no Node-API module.
    [PRE]: fs.readFileSync(fs.realpathSync('/lib/x86_64-linux-gnu/libz.so.1')),
  });
  const msg = load(dir).error?.message ?? '';
  t.match(msg, /local build \S+: invalid ELF header \(built for another platform or architecture\)/, 'garbage: not a binary for this platform');
  t.match(msg, /prebuilt binary \S+: .*\(not a Node-API module, or built for another Node version\)/, 'a plain shared library: not an addon');
  const { explainLoadFailure } = require('../dist/native');
  t.match(
    explainLoadFailure("/lib/x86_64-linux-gnu/libc.so.6: version `GLIBC_2.38' not found (required by /x/evit.node)"),
    /GLIBC_2\.38.*\(this system's glibc is older than the one the binary was built for\)/,
  );
  t.match(
    explainLoadFailure("/usr/lib/x86_64-linux-gnu/libstdc++.so.6: version `GLIBCXX_3.4.32' not found (required by /x/evit.node)"),
    /libstdc\+\+ is older/,
  );
  t.end();
});

test('a file that loads but is not the evit addon is refused', (t) => {
  // Another package's Node-API addon: sharp's, which is installed with it.
  const sharpAddon = (() => {
    try {
      const dir = path.dirname(require.resolve('@img/sharp-linux-x64/package.json', { paths: [root] }));
      return fs.readdirSync(path.join(dir, 'lib')).filter((f) => f.endsWith('.node')).map((f) => path.join(dir, 'lib', f))[0];
    } catch {
      return undefined;
    }
  })();
  if (!sharpAddon) {
    t.skip('no other Node-API addon installed to try');
    return t.end();
  }
  const r = load(layout('foreign'), { EVIT_BINDING: sharpAddon });
  t.match(r.error?.message ?? '', /EVIT_BINDING \S+sharp\S+: loaded, but it is not a compatible evit addon \(missing Model, backendInfo\)/);
  t.end();
});

test('EVIT_BINDING is the only file tried when set', (t) => {
  const dir = layout('env', { [PRE]: 'addon' });
  const missing = path.join(dir, 'nowhere', 'evit.node');
  const r = load(dir, { EVIT_BINDING: missing });
  const msg = r.error?.message ?? '';
  t.ok(msg.includes(`EVIT_BINDING ${missing}: not found`), 'the EVIT_BINDING file: not found');
  t.notOk(msg.includes(PRE), 'the prebuilt binary is not tried in its place');
  t.match(msg, /EVIT_BINDING is set, so only that file was tried/, 'and says so');
  const ok = load(dir, { EVIT_BINDING: built });
  t.deepEqual(ok.addon && { source: ok.addon.source, file: ok.addon.file }, { source: 'EVIT_BINDING', file: built });
  t.end();
});

test('the public API reports a missing addon as NativeError', async (t) => {
  const src = `
    const evit = require(${JSON.stringify(path.join(root, 'dist', 'index.js'))});
    const out = {};
    try { evit.backendInfo(); } catch (e) { out.info = [e.name, e.code]; }
    evit.loadModel(${JSON.stringify(require('./helpers/fixtures').tinyModel)}, { numHeads: 3 })
      .catch((e) => { out.load = [e.name, e.code]; })
      .finally(() => process.stdout.write(JSON.stringify(out)));`;
  const r = spawnSync(process.execPath, ['-e', src], { encoding: 'utf8', env: { ...process.env, EVIT_BINDING: path.join(work, 'none.node') } });
  t.equal(r.status, 0, r.stderr);
  t.deepEqual(JSON.parse(r.stdout), { info: ['NativeError', 'EVIT_NATIVE'], load: ['NativeError', 'EVIT_NATIVE'] });
  t.end();
});

test('install script: --build-from-source is read from npm config', (t) => {
  const { buildFromSourceForced } = require('../scripts/install');
  const cases = [[undefined, false], ['', false], ['false', false], ['true', true], ['1', true], ['evit', true], ['sharp,evit', true], ['sharp', false]];
  for (const [v, want] of cases)
    t.equal(buildFromSourceForced(v === undefined ? {} : { npm_config_build_from_source: v }), want, `${JSON.stringify(v)} -> ${want}`);
  t.end();
});

/** Runs the install script of a layout with PATH holding only node. */
function install(dir, env = {}) {
  const bin = path.join(dir, '.bin');
  fs.mkdirSync(bin, { recursive: true });
  if (!fs.existsSync(path.join(bin, 'node'))) fs.symlinkSync(process.execPath, path.join(bin, 'node'));
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^npm_|^EVIT_/i.test(k)));
  return spawnSync(process.execPath, [path.join(dir, 'scripts', 'install.js')], {
    cwd: dir, encoding: 'utf8', env: { ...clean, PATH: bin, ...env },
  });
}

test('install script: nothing to do when the prebuilt binary loads', (t) => {
  const r = install(layout('install-prebuilt', { [PRE]: 'addon' }));
  t.equal(r.status, 0, r.stderr);
  t.match(r.stderr, /evit: using the prebuilt binary \S+prebuilds\/linux-x64\/evit\.node \(/);
  t.end();
});

test('install script: with no usable binary and no compiler it fails and names what is missing', (t) => {
  const r = install(layout('install-nothing', { [PRE]: 'garbage' }));
  t.equal(r.status, 1, 'exit 1, so npm install fails');
  t.match(r.stderr, /no prebuilt binary loads here/, 'says the prebuilt binary did not load');
  t.match(r.stderr, /prebuilt binary \S+: file too short \(truncated, or not a compiled library at all\)/, 'and why');
  t.match(r.stderr, /missing:\n.*a C\+\+17 compiler.*\n.*make\n.*python3/, 'lists the compiler, make and python3');
  t.match(r.stderr, /sudo apt-get install g\+\+ make python3/, 'and the packages that provide them');
  t.end();
});

test('install script: forced source build without a compiler fails the same way', (t) => {
  const r = install(layout('install-forced', { [PRE]: 'addon' }), { npm_config_build_from_source: 'true' });
  t.equal(r.status, 1);
  t.match(r.stderr, /build from source requested/);
  t.match(r.stderr, /a C\+\+17 compiler/);
  t.end();
});

test('install script: a working checkout without a build is left to `npm run build`', (t) => {
  const dir = layout('install-checkout');
  fs.writeFileSync(path.join(dir, 'tsconfig.json'), '{}');
  fs.mkdirSync(path.join(dir, 'lib'));
  const r = install(dir);
  t.equal(r.status, 0, 'npm ci in a fresh clone does not fail or build');
  t.match(r.stderr, /build it with `npm run build`/);
  t.end();
});
