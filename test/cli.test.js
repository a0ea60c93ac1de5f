'use strict';
const test = require('tape');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { fixture, golden, tinyModel } = require('./helpers/fixtures');

const cli = path.join(__dirname, '..', 'dist', 'cli.js');
const example = path.join(__dirname, '..', 'examples', 'shapes.png');
const run = (args) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' });

test('classify --json prints one object with logits, top classes and kept tokens', (t) => {
  const r = run(['classify', '--weights', tinyModel, '--heads', '3', '--keep-rate', '0.7', '--no-fuse', '--top', '3', '--json', fixture('input-224.npy'), example]);
  t.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  t.equal(out.results.length, 3, 'two .npy images and one PNG');
  const want = golden.cases.find((c) => c.name === 'keep0.7-nofuse');
  out.results.slice(0, 2).forEach((res, b) => {
    t.equal(res.input, `${fixture('input-224.npy')}[${b}]`);
    const diff = Math.max(...want.logits[b].map((v, i) => Math.abs(v - res.logits[i])));
    t.ok(diff < 1e-4, `image ${b} logits match the reference (${diff.toExponential(2)})`);
    t.deepEqual(res.kept, want.kept.map((k) => ({ block: k.block, tokens: k.tokens[b] })), `image ${b} kept tokens`);
    t.equal(res.top.length, 3);
    t.deepEqual(Object.keys(res.top[0]).sort(), ['index', 'label', 'prob']);
  });
  t.equal(out.results[2].input, example);
  t.end();
});

test('--drop-loc, --img-size and fused origins', (t) => {
  const r = run(['classify', '--weights', tinyModel, '--heads', '3', '--keep-rate', '0.5', '--drop-loc', '2,8', '--img-size', '160', '--json', example]);
  t.equal(r.status, 0, r.stderr);
  const [res] = JSON.parse(r.stdout).results;
  // 10x10 grid: ceil(0.5·100) = 50 (+1 fused), ceil(0.5·51) = 26 (+1).
  t.deepEqual(res.kept.map((k) => [k.block, k.tokens.length]), [[2, 51], [8, 27]]);
  t.equal(res.kept[0].tokens[50], -3, 'token fused at block 2 has origin -3');
  t.equal(res.kept[1].tokens[26], -9, 'token fused at block 8 has origin -9');
  t.end();
});

test('text output names the inputs and the token counts', (t) => {
  const r = run(['classify', '--weights', tinyModel, '--heads', '3', example]);
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /tokens after blocks 3, 6, 9: 139 \/ 99 \/ 71/);
  t.match(r.stdout, /shapes\.png\n\s+\d+\.\d\d%  class \d/);
  t.end();
});

test('errors exit non-zero with a message, never a stack trace', (t) => {
  const cases = [
    [['classify', '--weights', '', example], 2, /--weights needs a file/],
    [['classify', '--weights', tinyModel, '--heads', '3'], 2, /at least one INPUT/],
    [['classify', '--weights', tinyModel, '--heads', '3', '--keep-rate', '1.5', example], 2, /keepRate must be a number in \(0, 1\]/],
    [['classify', '--weights', tinyModel, '--heads', '3', '--keep-rate', 'lots', example], 2, /--keep-rate must be a number/],
    [['classify', '--weights', tinyModel, '--heads', '3', '--drop-loc', '3,40', example], 2, /dropLoc entry 40/],
    [['classify', '--weights', 'nope.safetensors', example], 1, /not found.*EVIT_BAD_WEIGHTS/],
    [['classify', '--weights', tinyModel, '--heads', '3', path.join(__dirname, 'run.js')], 1, /run\.js.*EVIT_BAD_INPUT/],
    [['classify', '--weights', tinyModel, '--bogus', example], 2, /bogus/],
    [['frobnicate'], 2, /unknown command "frobnicate"/],
  ];
  for (const [args, code, re] of cases) {
    const r = run(args);
    t.equal(r.status, code, `${args.join(' ')} exits ${code}`);
    t.match(r.stderr, re, r.stderr.split('\n')[0]);
    t.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  }
  t.end();
});

test('info and --version', (t) => {
  const info = run(['info']);
  t.equal(info.status, 0);
  t.match(info.stdout, /cpu:\s+available, \d+ threads, (avx512|avx2|scalar) kernels, OpenBLAS/);
  t.match(info.stdout, /cuda: /);
  const v = run(['--version']);
  t.equal(v.stdout.trim(), require('../package.json').version);
  t.end();
});

test('--labels names the classes, from a JSON array or one per line', (t) => {
  const fs = require('node:fs');
  const os = require('node:os');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'evit-cli-'));
  const names = ['tee', 'trouser', 'pullover', 'dress', 'coat', 'sandal', 'shirt', 'sneaker', 'bag', 'boot'];
  const json = path.join(dir, 'labels.json');
  const txt = path.join(dir, 'labels.txt');
  fs.writeFileSync(json, JSON.stringify(names));
  fs.writeFileSync(txt, names.join('\n') + '\n');
  for (const file of [json, txt]) {
    const r = run(['classify', '--weights', tinyModel, '--heads', '3', '--labels', file, '--json', example]);
    t.equal(r.status, 0, r.stderr);
    const [res] = JSON.parse(r.stdout).results;
    t.ok(res.top.every((c) => c.label === names[c.index]), `${path.basename(file)}: every label matches its index`);
  }
  fs.writeFileSync(txt, 'a\nb\n');
  const short = run(['classify', '--weights', tinyModel, '--heads', '3', '--labels', txt, example]);
  t.equal(short.status, 2);
  t.match(short.stderr, /labels has 2 names but the model has 10 classes/);
  fs.rmSync(dir, { recursive: true, force: true });
  t.end();
});

test('the bin is executable on its own (npx evit runs it directly)', (t) => {
  const r = spawnSync(cli, ['--version'], { encoding: 'utf8' });
  t.error(r.error, 'spawned without a node prefix');
  t.equal(r.status, 0);
  t.equal(r.stdout.trim(), require('../package.json').version);
  t.end();
});
