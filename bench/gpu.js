#!/usr/bin/env node
'use strict';
/**
 * The CUDA backend benchmark (SPEC §5, GPU targets).
 *
 *   npm run bench:gpu                 (needs a CUDA device; tools/gpu-check.sh runs it)
 *   node bench/gpu.js --quick         (batches 1 and 8, short budgets: a smoke test)
 *
 * DeiT-S dimensions with seeded random weights, 224 px, bf16 (EVIT_BENCH_PRECISION to change),
 * fused reorganisation at blocks 3/6/9. At batch 1, 64 and 256, for dense, keep 0.7 and keep 0.5:
 *   - ms per batch with one batch in flight, and img/s with two in flight (the model's two
 *     streams), through the public forward(): host-to-device copy of the images included;
 *   - per-op device times from the profile (cudaEvents around each op, an eager pass), summed
 *     over blocks, and the reorganisation's share of its block and of the attention it follows;
 *   - timm's deit_small_patch16_224 under torch.autocast (bench/torch_peer.py) in the same run,
 *     with the input on the GPU and copied from the host.
 * Configurations of one batch size are timed round-robin; every ratio is within this run.
 * Writes the 'gpu' section of docs/BENCHMARKS.md and bench/results/gpu.json (with --quick:
 * bench/results/gpu-quick.{md,json}), and copies both into $OUT when it is set.
 */
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');

const evit = require('../dist');
const { loadBinding, profileSlots } = require('../dist/native');
const { writeSection } = require('./report');
const { median, fmt, table, writeRandomCheckpoint, randomImages, timeRoundRobin, cpuModel } = require('./common');

const QUICK = process.argv.includes('--quick');
const ARCH = 'deit_small_patch16_224';
const DIM = { embed: 384, depth: 12, heads: 6, patch: 16, img: 224, gridH: 14, gridW: 14, mlp: 1536, classes: 1000, inChans: 3 };
const BATCHES = QUICK ? [1, 8] : [1, 64, 256];
const PRECISION = process.env.EVIT_BENCH_PRECISION || 'bf16';
const IN_FLIGHT = 2;
const CONFIGS = [
  { name: 'dense', options: { keepRate: 1 } },
  { name: 'keep 0.7', options: { keepRate: 0.7, fuse: true, dropLoc: [3, 6, 9] } },
  { name: 'keep 0.5', options: { keepRate: 0.5, fuse: true, dropLoc: [3, 6, 9] } },
];
const BUDGET = QUICK ? { seconds: 0.3, minRounds: 3, maxRounds: 20 } : { seconds: 2, minRounds: 10, maxRounds: 400 };
const ROOT = path.resolve(__dirname, '..');
const RESULTS = path.join(ROOT, 'bench', 'results');

function fail(message) {
  process.stderr.write(`bench/gpu.js: ${message}\n`);
  process.exit(1);
}

/** Per-op device ms of one profiled pass, summed over blocks, plus each dropping block's reorganisation. */
function opTimes(profile, keptBlocks) {
  const slots = profileSlots();
  const ops = {};
  for (const slot of slots.model) ops[slot] = profile[slot];
  for (const slot of slots.block) ops[slot] = profile.blocks.reduce((a, b) => a + b[slot], 0);
  const total = Object.values(ops).reduce((a, b) => a + b, 0);
  const reorganise = keptBlocks.map((block) => {
    const b = profile.blocks[block];
    const blockMs = slots.block.reduce((a, s) => a + b[s], 0);
    return { block, ms: b.reorganise, attentionMs: b.attention, blockMs, ofBlock: b.reorganise / blockMs, ofAttention: b.reorganise / b.attention };
  });
  return { ops, total, reorganise };
}

function medianProfile(runs) {
  const keys = Object.keys(runs[0].ops);
  const ops = Object.fromEntries(keys.map((k) => [k, median(runs.map((r) => r.ops[k]))]));
  const reorganise = runs[0].reorganise.map((_, j) => {
    const pick = (f) => median(runs.map((r) => r.reorganise[j][f]));
    return { block: runs[0].reorganise[j].block, ms: pick('ms'), attentionMs: pick('attentionMs'), blockMs: pick('blockMs'), ofBlock: pick('ofBlock'), ofAttention: pick('ofAttention') };
  });
  return { ops, total: median(runs.map((r) => r.total)), reorganise };
}

function torchPeer() {
  const r = spawnSync(process.env.PYTHON || 'python3', [path.join(__dirname, 'torch_peer.py'), '--batches', BATCHES.join(','),
    '--dtype', PRECISION === 'f16' ? 'fp16' : 'bf16', '--seconds', QUICK ? '0.3' : '2'], { encoding: 'utf8', maxBuffer: 16 << 20 });
  if (r.error) return { error: `could not run python3: ${r.error.message}` };
  const line = r.stdout.trim().split('\n').pop() || '';
  try {
    return JSON.parse(line);
  } catch {
    return { error: `torch_peer.py exited ${r.status}: ${(r.stderr || r.stdout).trim().split('\n').slice(-3).join(' ')}` };
  }
}

async function main() {
  const info = loadBinding().backendInfo();
  if (!info.cuda.available) fail(`the CUDA backend cannot run here: ${info.cuda.reason}`);
  const dev = info.cuda.devices[0];
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'evit-gpu-bench-'));
  const ckpt = path.join(tmp, 'deit-s-random.safetensors');
  writeRandomCheckpoint(ckpt, DIM);
  const maxBatch = Math.max(...BATCHES);
  const model = await evit.loadModel(ckpt, { arch: ARCH, device: 'cuda', precision: PRECISION, maxBatch, streams: IN_FLIGHT });
  fs.rmSync(tmp, { recursive: true, force: true });
  process.stderr.write(`device ${dev.name} (sm ${dev.computeCapability}), ${PRECISION}, batches ${BATCHES.join('/')}\n`);

  const rows = [];
  for (const B of BATCHES) {
    const input = randomImages(B, DIM.inChans, DIM.img, DIM.img);
    const one = CONFIGS.map((c) => ({ name: c.name, run: () => model.forward(input, c.options) }));
    const many = CONFIGS.map((c) => ({ name: c.name, run: () => Promise.all(Array.from({ length: IN_FLIGHT }, () => model.forward(input, c.options))) }));
    // Each context captures its own graphs: warm every context for every shape first.
    for (let i = 0; i < 3; i++) for (const e of many) await e.run();
    await timeRoundRobin(one, BUDGET);
    await timeRoundRobin(many, BUDGET);
    for (const [i, c] of CONFIGS.entries()) {
      const profiles = [];
      for (let r = 0; r < (QUICK ? 2 : 5); r++) {
        const out = await model.forward(input, { ...c.options, profile: true });
        profiles.push(opTimes(out.profile, out.kept.map((k) => k.block)));
      }
      const msOne = median(one[i].times);
      const msMany = median(many[i].times);
      rows.push({ batch: B, config: c.name, msPerBatch: msOne, imgPerSecOne: (B / msOne) * 1000, imgPerSec: ((IN_FLIGHT * B) / msMany) * 1000, profile: medianProfile(profiles) });
      process.stderr.write(`  batch ${B} ${c.name}: ${fmt(msOne, 3)} ms/batch, ${fmt(((IN_FLIGHT * B) / msMany) * 1000, 0)} img/s with ${IN_FLIGHT} in flight\n`);
    }
  }
  model.dispose();
  const peer = torchPeer();
  if (peer.error) process.stderr.write(`  PyTorch peer: ${peer.error}\n`);

  const result = {
    date: new Date().toISOString(),
    device: { ...dev, driverVersion: info.cuda.driverVersion, runtimeVersion: info.cuda.runtimeVersion },
    cpu: cpuModel(),
    node: process.version,
    precision: PRECISION,
    inFlight: IN_FLIGHT,
    quick: QUICK,
    rows,
    peer,
  };
  const md = report(result);
  fs.mkdirSync(RESULTS, { recursive: true });
  const base = QUICK ? 'gpu-quick' : 'gpu';
  fs.writeFileSync(path.join(RESULTS, `${base}.json`), JSON.stringify(result, null, 2) + '\n');
  if (QUICK) fs.writeFileSync(path.join(RESULTS, `${base}.md`), md);
  else writeSection('gpu', md);
  if (process.env.OUT) {
    fs.mkdirSync(process.env.OUT, { recursive: true });
    fs.writeFileSync(path.join(process.env.OUT, `${base}.json`), JSON.stringify(result, null, 2) + '\n');
    fs.writeFileSync(path.join(process.env.OUT, `${base}.md`), md);
  }
  process.stdout.write(md);
}

function report(r) {
  const at = (B, name) => r.rows.find((x) => x.batch === B && x.config === name);
  const peerAt = (B) => (r.peer.results || []).find((p) => p.batch === B);
  const version = (v) => `${Math.floor(v / 1000)}.${Math.floor((v % 1000) / 10)}`;
  const lines = [
    '## GPU: the CUDA backend (`bench/gpu.js`)',
    '',
    `Device: **${r.device.name}** (compute capability ${r.device.computeCapability}, ${(r.device.memoryBytes / 2 ** 30).toFixed(0)} GiB), ` +
      `driver CUDA ${version(r.device.driverVersion)}, runtime ${version(r.device.runtimeVersion)}; host ${r.cpu}; Node ${r.node}; ${r.date.slice(0, 10)}.`,
    `DeiT-S dimensions (embed 384, depth 12, 6 heads, 224 px), random weights, evit in ${r.precision}; keep rates fused at blocks 3/6/9.`,
    `Throughput: ${r.inFlight} batches in flight through \`forward()\` (images copied from the host each batch). Medians within this one run.`,
    '',
  ];
  const peerCol = (B, mode) => (peerAt(B) ? fmt(peerAt(B)[mode].imgPerSec, 0) : 'n/a');
  lines.push(table(
    ['batch', 'dense img/s', 'keep 0.7 img/s (× dense)', 'keep 0.5 img/s (× dense)', `PyTorch AMP img/s (GPU input / host input)`, 'evit dense ÷ PyTorch (host input)'],
    BATCHES.map((B) => {
      const d = at(B, 'dense');
      const k7 = at(B, 'keep 0.7');
      const k5 = at(B, 'keep 0.5');
      const p = peerAt(B);
      return [B, fmt(d.imgPerSec, 0), `${fmt(k7.imgPerSec, 0)} (${fmt(k7.imgPerSec / d.imgPerSec, 2)}×)`, `${fmt(k5.imgPerSec, 0)} (${fmt(k5.imgPerSec / d.imgPerSec, 2)}×)`,
        `${peerCol(B, 'gpuInput')} / ${peerCol(B, 'hostInput')}`, p ? `${fmt(d.imgPerSec / p.hostInput.imgPerSec, 2)}×` : 'n/a'];
    }),
  ));
  lines.push('', 'One batch in flight, ms per batch (× dense):', '');
  lines.push(table(['batch', 'dense', 'keep 0.7', 'keep 0.5'], BATCHES.map((B) => {
    const d = at(B, 'dense');
    return [B, fmt(d.msPerBatch, 3), ...['keep 0.7', 'keep 0.5'].map((n) => `${fmt(at(B, n).msPerBatch, 3)} (${fmt(d.msPerBatch / at(B, n).msPerBatch, 2)}×)`)];
  })));
  const mid = BATCHES[Math.min(1, BATCHES.length - 1)];
  lines.push('', `Device time per op at batch ${mid}, ms summed over the 12 blocks (profiled pass: cudaEvents between ops, launched one by one):`, '');
  // In pass order: the patch embedding (first model slot) before the blocks, the head after them.
  const { model: modelSlots, block: blockSlots } = profileSlots();
  const opNames = [modelSlots[0], ...blockSlots, ...modelSlots.slice(1)];
  lines.push(table(['config', ...opNames, 'total'], CONFIGS.map((c) => {
    const p = at(mid, c.name).profile;
    return [c.name, ...opNames.map((o) => fmt(p.ops[o], 3)), fmt(p.total, 3)];
  })));
  lines.push('', 'Reorganisation (top-k + gather + fusion, one kernel) per dropping block, keep 0.7: ms, share of its block, share of the attention before it:', '');
  lines.push(table(['batch', ...at(BATCHES[0], 'keep 0.7').profile.reorganise.map((x) => `block ${x.block}`)], BATCHES.map((B) => [B,
    ...at(B, 'keep 0.7').profile.reorganise.map((x) => `${fmt(x.ms, 4)} ms, ${fmt(100 * x.ofBlock, 1)}% / ${fmt(100 * x.ofAttention, 1)}%`)])));
  // The targets of the issue and SPEC §5, as measured here.
  const big = BATCHES.filter((B) => B >= 64);
  const ratio = (B, n) => at(B, n).imgPerSec / at(B, 'dense').imgPerSec;
  const worstShare = Math.max(...r.rows.filter((x) => x.config !== 'dense').flatMap((x) => x.profile.reorganise.map((y) => y.ofBlock)));
  const check = (ok) => (ok ? 'met' : '**not met**');
  lines.push('', 'Targets:', '');
  if (big.length) lines.push(`- keep 0.7 ≥ 1.5× dense at batch ≥ 64: ${big.map((B) => `${fmt(ratio(B, 'keep 0.7'), 2)}× at ${B}`).join(', ')}: ${check(big.every((B) => ratio(B, 'keep 0.7') >= 1.5))}`);
  lines.push(`- batch 1 never slower than dense: keep 0.7 ${fmt(at(1, 'dense').msPerBatch / at(1, 'keep 0.7').msPerBatch, 2)}×, keep 0.5 ${fmt(at(1, 'dense').msPerBatch / at(1, 'keep 0.5').msPerBatch, 2)}× dense speed: ${check(['keep 0.7', 'keep 0.5'].every((n) => at(1, n).msPerBatch <= at(1, 'dense').msPerBatch))}`);
  lines.push(`- reorganisation < 5% of its block: worst ${fmt(100 * worstShare, 2)}%: ${check(worstShare < 0.05)}`);
  if (r.peer.results) {
    const vs = BATCHES.map((B) => [B, at(B, 'dense').imgPerSec / peerAt(B).hostInput.imgPerSec, at(B, 'dense').imgPerSec / peerAt(B).gpuInput.imgPerSec]);
    lines.push(`- dense ahead of PyTorch (${r.peer.model}, torch ${r.peer.torch}, timm ${r.peer.timm}, autocast ${r.peer.autocast}): ` +
      `${vs.map(([B, h, g]) => `${fmt(h, 2)}× (host input) / ${fmt(g, 2)}× (GPU input) at ${B}`).join(', ')}: ${check(vs.every(([, h]) => h > 1))} against the host-input peer, ${check(vs.every(([, , g]) => g > 1))} against the GPU-input peer`);
  } else {
    lines.push(`- dense ahead of PyTorch: not measured (${r.peer.error})`);
  }
  return lines.join('\n') + '\n';
}

main().catch((err) => fail(err.stack || String(err)));
