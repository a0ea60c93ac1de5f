'use strict';
// Comparisons of a CUDA forward pass with the CPU backend's, each reported with its
// tolerance and worst deviation so a failing run says by how much.
const { loadModel, readNpy } = require('../../dist');
const { mulberry32, uniform } = require('../helpers/reference');
const { fixture, tinyModel, tinyOptions } = require('../helpers/fixtures');

/**
 * Logit tolerances against the CPU backend (absolute; the test model's logits are within ±7).
 * f32: summation order only. f16 / bf16: GEMM inputs rounded to 11 / 8 significant bits with
 * fp32 accumulation, over 12 blocks, plus the occasional kept token swapped at the k-th
 * boundary (see keptAgreement). docs/CUDA.md quotes these.
 */
const LOGIT_TOL = { f32: 1e-3, f16: 3e-2, bf16: 1.5e-1 };

/** CPU and CUDA models of the test checkpoint with the same schedule options. */
async function modelPair(precision, options = {}) {
  const cpu = await loadModel(tinyModel, { ...tinyOptions, ...options, device: 'cpu' });
  const gpu = await loadModel(tinyModel, { ...tinyOptions, ...options, device: 'cuda', precision });
  return { cpu, gpu };
}

/** `n` deterministic images for the model's input size (ImageNet-normalised range). */
function randomImages(model, n, seed) {
  const per = model.architecture.inChans * model.imgSize * model.imgSize;
  return { data: uniform(mulberry32(seed), n * per, -2, 2), shape: [n, model.architecture.inChans, model.imgSize, model.imgSize] };
}

const fixtureInput = (name) => readNpy(fixture(name));

function argmax(a) {
  let best = 0;
  for (let i = 1; i < a.length; i++) if (a[i] > a[best]) best = i;
  return best;
}

/** Top-1 per image identical, and logits within tol; one assertion each, with the numbers. */
function checkLogits(t, label, cpu, gpu, tol) {
  const [B, K] = cpu.shape;
  t.deepEqual(gpu.shape, cpu.shape, `${label}: logits shape`);
  let worst = 0;
  let at = -1;
  for (let i = 0; i < cpu.logits.length; i++) {
    const d = Math.abs(cpu.logits[i] - gpu.logits[i]);
    if (!(d <= worst)) { worst = d; at = i; }  // NaN counts as worst
  }
  t.ok(worst <= tol, `${label}: logits within ${tol} of the CPU (worst ${worst.toExponential(2)} at image ${Math.floor(at / K)} class ${at % K})`);
  // Top-1 must agree wherever the CPU's lead over its runner-up exceeds 2·tol (closer races
  // can flip within the logit tolerance; they are counted, not failed).
  const differ = [];
  let close = 0;
  for (let b = 0; b < B; b++) {
    const c = cpu.logits.subarray(b * K, (b + 1) * K);
    const g = gpu.logits.subarray(b * K, (b + 1) * K);
    const top = argmax(c);
    const lead = Math.min(...Array.from(c).map((v, i) => (i === top ? Infinity : c[top] - v)));
    if (lead <= 2 * tol) close++;
    else if (argmax(g) !== top) differ.push(`image ${b}: cpu ${top} cuda ${argmax(g)}, lead ${lead.toFixed(3)}`);
  }
  t.equal(differ.length, 0, `${label}: top-1 identical for ${B - close} of ${B} images (${close} with a lead under ${2 * tol} not required)${differ.length ? `: ${differ.join('; ')}` : ''}`);
}

/**
 * Kept tokens per reorganising block and image. exact: same tokens in the same order (f32).
 * Otherwise: same sets, except tokens whose scores sit at the k-th boundary, where 16-bit
 * rounding may order a near-tie the other way: every token newly in one set but not the other
 * must be among the last `boundary` kept places of its list, at most `maxSwaps` per image and
 * block. A token one backend dropped earlier cannot be kept by it later; such inherited
 * differences are not counted again.
 */
function checkKept(t, label, cpu, gpu, { exact, boundary = 3, maxSwaps = 2 }) {
  t.deepEqual(gpu.kept.map((k) => [k.block, ...k.shape]), cpu.kept.map((k) => [k.block, ...k.shape]), `${label}: reorganising blocks and shapes`);
  if (gpu.kept.length !== cpu.kept.length) return;
  let identical = 0;
  let total = 0;
  const problems = [];
  const B = cpu.shape[0];
  for (let b = 0; b < B; b++) {
    let prevCpu = null;
    let prevGpu = null;
    cpu.kept.forEach((ck, j) => {
      const gk = gpu.kept[j];
      const n = ck.shape[1];
      const c = Array.from(ck.tokens.subarray(b * n, (b + 1) * n));
      const g = Array.from(gk.tokens.subarray(b * n, (b + 1) * n));
      total++;
      if (c.every((v, i) => v === g[i])) identical++;
      else if (exact) problems.push(`block ${ck.block} image ${b}: cpu ${JSON.stringify(c)} cuda ${JSON.stringify(g)}`);
      else {
        const cs = new Set(c);
        const gs = new Set(g);
        // Places 0..k-1 are the kept tokens by score; a token fused at this block comes last.
        const k = c[n - 1] === -1 - ck.block ? n - 1 : n;
        const onlyCpu = c.map((v, i) => [v, i]).filter(([v]) => !gs.has(v) && !(prevGpu && !prevGpu.has(v)));
        const onlyGpu = g.map((v, i) => [v, i]).filter(([v]) => !cs.has(v) && !(prevCpu && !prevCpu.has(v)));
        const far = [...onlyCpu, ...onlyGpu].filter(([, i]) => i < k - boundary);
        if (onlyCpu.length > maxSwaps || onlyGpu.length > maxSwaps || far.length)
          problems.push(`block ${ck.block} image ${b}: cpu-only ${JSON.stringify(onlyCpu)}, cuda-only ${JSON.stringify(onlyGpu)} ([token, place] of ${k})`);
      }
      prevCpu = new Set(c);
      prevGpu = new Set(g);
    });
  }
  const what = exact ? 'identical tokens in identical order' : `identical sets up to ${maxSwaps} swaps within the last ${boundary} places`;
  t.equal(problems.length, 0, `${label}: kept tokens ${what} (${identical}/${total} image-blocks exactly equal)${problems.length ? `: ${problems.slice(0, 4).join('; ')}` : ''}`);
}

/** Passes when `promise` rejects with an error `pred` accepts (an Error class, or a predicate). */
async function rejects(t, promise, pred, msg) {
  let err = null;
  try {
    await promise;
  } catch (e) {
    err = e;
  }
  if (!err) return t.fail(`${msg}: resolved`);
  const ok = pred.prototype instanceof Error ? err instanceof pred : pred(err);
  return t.ok(ok, ok ? msg : `${msg}: got ${err.name} ${err.code ?? ''} ${err.message}`);
}

module.exports = { rejects, LOGIT_TOL, modelPair, randomImages, fixtureInput, checkLogits, checkKept };
