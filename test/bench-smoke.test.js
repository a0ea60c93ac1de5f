'use strict';
// The benchmark scripts at tiny sizes: every output file is produced and well-formed. No timing is asserted.
const test = require('tape');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const sharp = require('sharp');

const root = path.join(__dirname, '..');
const cli = path.join(root, 'dist', 'cli.js');
const doc = path.join(root, 'docs', 'BENCHMARKS.md');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'evit-bench-smoke-'));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));
const docBefore = fs.existsSync(doc) ? fs.readFileSync(doc, 'utf8') : null;

/** Rows of a CSV without quoted fields, as objects keyed by the header. */
function readCsv(file) {
  const [head, ...lines] = fs.readFileSync(file, 'utf8').trimEnd().split('\n');
  const cols = head.split(',');
  return { cols, rows: lines.map((l) => Object.fromEntries(l.split(',').map((v, i) => [cols[i], v]))) };
}

async function checkPlot(t, base) {
  const svg = fs.readFileSync(`${base}.svg`, 'utf8');
  t.match(svg, /^<svg[^>]*xmlns="http:\/\/www\.w3\.org\/2000\/svg"/, `${path.basename(base)}.svg is an SVG document`);
  t.ok(svg.trimEnd().endsWith('</svg>'), `${path.basename(base)}.svg is complete`);
  t.ok(/<path/.test(svg), `${path.basename(base)}.svg draws marks`);
  const meta = await sharp(`${base}.png`).metadata();
  t.equal(meta.format, 'png', `${path.basename(base)}.png decodes`);
  t.ok(meta.width > 300 && meta.height > 200, `${path.basename(base)}.png is ${meta.width}x${meta.height}`);
}

/** The markdown table that follows `heading`, as arrays of cells (header row first, separator dropped). */
function tableAfter(md, heading) {
  const at = md.indexOf(heading);
  if (at < 0) return [];
  const lines = md.slice(at).split('\n').slice(1);
  const start = lines.findIndex((l) => l.startsWith('|'));
  const out = [];
  for (const l of lines.slice(start)) {
    if (!l.startsWith('|')) break;
    if (/^\|( --- \|)+$/.test(l)) continue;
    out.push(l.slice(2, -2).split(' | '));
  }
  return out;
}

test('bench/attn.js --quick: CSV, markdown and both plots', async (t) => {
  const out = path.join(tmp, 'attn');
  const r = spawnSync(process.execPath, [path.join(root, 'bench', 'attn.js'), '--quick', '--quiet', '--out', out], { encoding: 'utf8' });
  t.equal(r.status, 0, r.stderr);
  const { cols, rows } = readCsv(path.join(out, 'quick.attn.csv'));
  t.ok(['backend', 'model', 'tokens', 'batch', 'config', 'block_ms', 'attention_ms', 'reorganise_ms', 'block_speedup'].every((c) => cols.includes(c)), 'CSV columns');
  // Quick plan: DeiT-T and DeiT-S, N = 50 and 100, batch 1 and 2, dense + keep 0.9 / 0.7 / 0.5.
  t.equal(rows.filter((x) => x.backend === 'cpu').length, 2 * 2 * 2 * 4, 'one row per configuration');
  for (const x of rows) {
    t.ok(Number(x.block_ms) > 0 && Number(x.attention_ms) > 0, `${x.model} N=${x.tokens} batch ${x.batch} ${x.config}: positive times`);
    const keep = Number(x.keep_rate);
    // ceil(keep · (N − 1)) kept, plus the class token and the fused token.
    const want = x.config === 'dense' ? Number(x.tokens) : 2 + Math.ceil(keep * (Number(x.tokens) - 1));
    t.equal(Number(x.tokens_out), want, `${x.model} N=${x.tokens} ${x.config}: tokens after the block`);
    if (x.config === 'dense') t.equal(Number(x.block_speedup), 1, 'dense against itself');
    else t.ok(Number(x.reorganise_ms) > 0, 'reorganisation timed');
  }
  const md = fs.readFileSync(path.join(out, 'quick.attn.md'), 'utf8');
  const tab = tableAfter(md, '### CPU, batch 1');
  t.equal(tab.length, 1 + 4, 'batch 1 table: header and 2 models × 2 token counts');
  t.ok(tab.every((row) => row.length === tab[0].length), 'every table row has every column');
  t.match(md, /AMD|Intel|CPU \|/, 'names the machine');
  await checkPlot(t, path.join(out, 'quick.attn-time'));
  await checkPlot(t, path.join(out, 'quick.attn-speedup'));
  t.end();
});

test('bench/e2e.js --quick: CSV, markdown, plots, and the accuracy trade-off', async (t) => {
  const out = path.join(tmp, 'e2e');
  const accuracy = path.join(tmp, 'accuracy.json');
  fs.writeFileSync(accuracy, JSON.stringify({
    model: 'test model',
    machine: 'test machine',
    rows: [
      { keepRate: 1, fuse: true, top1: 0.9, imgPerSec: 100 },
      { keepRate: 0.7, fuse: true, top1: 0.88, imgPerSec: 140 },
      { keepRate: 0.7, fuse: false, top1: 0.86, imgPerSec: 145 },
    ],
  }));
  const r = spawnSync(process.execPath, [path.join(root, 'bench', 'e2e.js'), '--quick', '--quiet', '--out', out, '--accuracy', accuracy], { encoding: 'utf8' });
  t.equal(r.status, 0, r.stderr);
  const { rows } = readCsv(path.join(out, 'quick.e2e.csv'));
  const evit = rows.filter((x) => x.engine === 'evit');
  t.deepEqual(evit.map((x) => [x.measure, x.keep_rate, x.tokens_after]), [
    ['latency', '1', '196/196/196'], ['latency', '0.7', '139/99/71'], ['latency', '0.5', '99/51/27'],
    ['throughput', '1', '196/196/196'], ['throughput', '0.7', '139/99/71'], ['throughput', '0.5', '99/51/27'],
  ], 'every keep rate at both batch sizes, with the SPEC token counts');
  for (const x of evit) {
    t.ok(Math.abs(Number(x.img_per_s) - (Number(x.batch) * 1000) / Number(x.median_ms)) < 1e-3 * Number(x.img_per_s), `img/s = batch / median (${x.measure} ${x.keep_rate})`);
    t.ok(Number(x.p90_ms) >= Number(x.median_ms), 'p90 ≥ median');
  }
  // Analytic FLOP ratio of keep 0.7 against dense for DeiT-T (SPEC: 1.53× for DeiT-S, a little more for the narrower T).
  const flop07 = Number(evit.find((x) => x.keep_rate === '0.7').flop_ratio);
  t.ok(flop07 > 1.45 && flop07 < 1.6, `keep 0.7 FLOP ratio ${flop07}`);
  const md = fs.readFileSync(path.join(out, 'quick.e2e.md'), 'utf8');
  const acc = tableAfter(md, '### Accuracy against speed');
  t.deepEqual(acc.slice(1).map((row) => row.slice(0, 4)), [
    ['1', 'yes', '90.00%', '0.00 pt'], ['0.7', 'yes', '88.00%', '-2.00 pt'], ['0.7', 'no', '86.00%', '-4.00 pt'],
  ], 'accuracy table from the file');
  t.match(md, /onnxruntime-node/, 'the peer is reported (run or skipped with the reason)');
  if (!fs.existsSync(path.join(root, 'node_modules', 'onnxruntime-node'))) t.match(md, /ONNXRUNTIME_NODE_INSTALL=skip npm install --no-save onnxruntime-node/, 'how to install the peer');
  for (const p of ['throughput', 'latency', 'accuracy']) await checkPlot(t, path.join(out, `quick.e2e-${p}`));
  t.end();
});

test('a missing or malformed accuracy table is reported, not plotted', (t) => {
  const { readAccuracy } = require('../bench/e2e');
  t.match(readAccuracy(path.join(tmp, 'nope.json')).missing, /does not exist/);
  const bad = path.join(tmp, 'bad.json');
  fs.writeFileSync(bad, JSON.stringify({ model: 'm', rows: [{ keepRate: 0.7, fuse: true, top1: 88 }] }));
  t.match(readAccuracy(bad).missing, /not shaped/, 'top1 must be a fraction and imgPerSec present');
  t.end();
});

test('bench/queue.js --quick: serve, one and two workers on a local Redis, with ratios', (t) => {
  const r = spawnSync(process.execPath, [path.join(root, 'bench', 'queue.js'), '--quick'], { encoding: 'utf8', timeout: 120_000 });
  t.equal(r.status, 0, r.stderr.split('\n').slice(-3).join(' | '));
  const md = fs.readFileSync(path.join(root, 'bench', 'results', 'quick.queue.md'), 'utf8');
  const rows = tableAfter(md, '| path | in flight | jobs/s');
  t.deepEqual(rows.map((x) => x[0]), ['evit serve (HTTP)', '1 worker (BullMQ)', '2 workers (BullMQ)'], 'one row per path');
  for (const x of rows) t.ok(Number(x[2]) > 0 && Number(x[4]) >= Number(x[3]) && x[6] === '0', `${x[0]}: ${x[2]} jobs/s, p99 ${x[4]} ≥ p50 ${x[3]} ms, no errors`);
  const ratios = tableAfter(md, 'Against `evit serve`').slice(1);
  t.equal(ratios.length, 2, 'each worker count against serve');
  t.end();
});

test('bench/shunted.js --quick: Shunted-T/S and DeiT-S in one run, with ratios and the per-op profile', (t) => {
  const r = spawnSync(process.execPath, [path.join(root, 'bench', 'shunted.js'), '--quick'], { encoding: 'utf8', timeout: 180_000 });
  t.equal(r.status, 0, r.stderr.split('\n').slice(-3).join(' | '));
  const md = fs.readFileSync(path.join(root, 'bench', 'results', 'shunted-quick.md'), 'utf8');
  const rows = tableAfter(md, '| batch | model | GFLOP/img');
  t.deepEqual(rows.map((x) => `${x[0]} ${x[1]}`), ['1', '8'].flatMap((b) => ['Shunted-T', 'Shunted-S', 'DeiT-S dense', 'DeiT-S keep 0.7 fused'].map((m) => `${b} ${m}`)), 'one row per batch and model');
  t.deepEqual(rows.slice(0, 2).map((x) => x[2]), ['4.293', '9.986'], 'GFLOP/img from the reference MAC count (2.147 / 4.993 GMAC)');
  for (const x of rows) t.ok(Number(x[5]) > 0 && Number(x[6]) > 0, `${x[0]} ${x[1]}: ${x[5]} img/s, ${x[6]} GFLOP/s`);
  const profile = tableAfter(md, '| slot | batch 1 | batch 8');
  const { shunted: slots } = require('../dist').backendInfo().profileSlots;
  t.deepEqual(profile.map((x) => x[0]), [...slots.model, ...slots.block], 'every Shunted slot');
  t.ok(profile.every((x) => Number(x[1]) >= 0 && Number(x[2]) >= 0), 'times per image at batch 1 and 8');
  t.end();
});

test('quick runs leave docs/BENCHMARKS.md alone; the benchmarks are npm scripts of the repository, not an evit command', (t) => {
  t.equal(fs.existsSync(doc) ? fs.readFileSync(doc, 'utf8') : null, docBefore);
  const r = spawnSync(process.execPath, [cli, 'bench', 'attn'], { encoding: 'utf8' });
  t.equal(r.status, 2);
  t.match(r.stderr, /unknown command "bench"/);
  const scripts = require('../package.json').scripts;
  for (const [name, file] of [['bench', 'forward.js'], ['bench:attn', 'attn.js'], ['bench:e2e', 'e2e.js'], ['bench:serve', 'serve.js'], ['bench:gpu', 'gpu.js'], ['bench:shunted', 'shunted.js']])
    t.equal(scripts[name], `node bench/${file}`, `npm run ${name} runs bench/${file}`);
  t.end();
});
