'use strict';
// Mutation test of the SIMT emulator and the kernel tests: copies of the real kernel
// sources with one injected bug each, every one of which must make the kernel tests fail,
// while the unmutated sources pass the same tests. Builds share the object cache, so a
// mutant recompiles only its own file.
const test = require('tape');
const { spawnSync } = require('node:child_process');
const { buildProgram, ROOT } = require('./simt/build');
const { kernelProgram, mutantTree } = require('./simt/programs');

const ASAN_ENV = { ASAN_OPTIONS: 'detect_leaks=0', UBSAN_OPTIONS: 'print_stacktrace=1' };

// run: the parts of the kernel test program (type and op) that must fail.
const MUTANTS = [
  {
    name: 'the __syncthreads of the GEMM main loop removed',
    file: 'cuda/linear_mma.cu',
    find: '    __syncthreads();  // slice kt visible to all warps',
    replace: '    // (removed)',
    run: ['f16', 'linear'],
  },
  {
    name: 'cpAsyncWait<kStages - 1> (wait_group 2) instead of <kStages - 2> in the GEMM main loop',
    file: 'cuda/linear_mma.cu',
    find: 'cpAsyncWait<kStages - 2>();',
    replace: 'cpAsyncWait<kStages - 1>();',
    run: ['bf16', 'linear'],
  },
  {
    name: 'the __syncwarp after the attention softmax removed',
    file: 'cuda/attention_mma.cu',
    find: '      }\n      __syncwarp();\n    }\n    const int j0',
    replace: '      }\n    }\n    const int j0',
    run: ['f16', 'attention'],
  },
  {
    name: 'two B-fragment registers swapped in the GEMM',
    file: 'cuda/linear_mma.cu',
    find: 'bf[2 * nj][0] = r[0];\n        bf[2 * nj][1] = r[1];',
    replace: 'bf[2 * nj][0] = r[1];\n        bf[2 * nj][1] = r[0];',
    run: ['bf16', 'linear'],
  },
  {
    name: 'V loaded without .trans in the tensor-core attention',
    file: 'cuda/attention_mma.cu',
    find: 'ldmatrixX4Trans(r, tile + key * kvStride + chunk * 8);',
    replace: 'ldmatrixX4(r, tile + key * kvStride + chunk * 8);',
    run: ['f16', 'attention'],
  },
  {
    name: 'an 84 KiB attention launch without the shared-memory opt-in',
    file: 'cuda/attention_mma.cu',
    find: '    reserveSharedMemory(attentionMmaKernel<T, MAXD, true>, bytes, "attention (tensor cores)");\n',
    replace: '',
    run: ['bf16', 'attention'],
    expect: /cudaErrorInvalidValue/,
  },
  {
    name: 'topkGatherFuse one byte short of its shared memory (ASan)',
    file: 'cuda/topk_gather_fuse.cu',
    find: 'const size_t keyBytes = (size_t)n * sizeof(uint64_t);',
    replace: 'const size_t keyBytes = (size_t)n * sizeof(uint64_t) - 1;',
    run: ['topk'],
    flavour: 'asan',
    expect: /AddressSanitizer[\s\S]*cuda\/topk_gather_fuse\.cu:\d+/,
  },
];

function runPart(exe, args, env) {
  const r = spawnSync(exe, args, { encoding: 'utf8', timeout: 300e3, env: { ...process.env, ...env }, maxBuffer: 64 << 20 });
  const failed = (r.stdout || '').split('\n').filter((l) => l.startsWith('not ok'));
  return { ...r, failed };
}

async function buildOrFail(t, spec) {
  const b = await buildProgram(spec);
  if (b.error) t.fail(`${spec.name}: build failed:\n${b.error}`);
  else t.comment(`${spec.name}: built in ${b.seconds.toFixed(1)} s (${b.compiled} compiled)`);
  return b.exe;
}

test('SIMT mutation test: every injected kernel bug makes the kernel tests fail', async (t) => {
  const started = Date.now();
  // The unmutated sources pass exactly the parts each mutant must fail.
  const baseline = {};
  for (const flavour of ['release', 'asan']) {
    baseline[flavour] = await buildOrFail(t, kernelProgram({ root: ROOT, flavour, name: `simt_kernels_${flavour}` }));
  }
  for (const m of MUTANTS) {
    const flavour = m.flavour || 'release';
    if (!baseline[flavour]) continue;
    const base = runPart(baseline[flavour], m.run, ASAN_ENV);
    t.ok(base.status === 0 && base.failed.length === 0,
      `unmutated sources pass ${m.run.join(' ')} (${flavour})${base.failed.length ? `: ${base.failed.slice(0, 2).join('; ')}` : ''}`);
  }
  for (const [i, m] of MUTANTS.entries()) {
    let root;
    try {
      root = mutantTree(`m${i}`, m);
    } catch (e) {
      t.fail(`${m.name}: ${e.message}`);
      continue;
    }
    const flavour = m.flavour || 'release';
    const exe = await buildOrFail(t, kernelProgram({ root, flavour, name: `simt_mutant_${i}` }));
    if (!exe) continue;
    const r = runPart(exe, m.run, ASAN_ENV);
    const caught = r.status !== 0 && (r.failed.length > 0 || r.signal || /AddressSanitizer|runtime error/.test(r.stderr));
    const evidence = r.failed.length
      ? `${r.failed.length} checks failed, first: ${r.failed[0].replace(/^not ok \d+ - /, '')}`
      : ((r.stderr || '').match(/^.*(ERROR: AddressSanitizer|runtime error).*$/m) || [`exit ${r.status ?? r.signal}`])[0];
    t.ok(caught, `${m.name}: caught (${evidence.slice(0, 300)})`);
    if (m.expect) t.ok(m.expect.test(`${r.stdout}\n${r.stderr}`), `${m.name}: the failure says ${m.expect}`);
  }
  t.comment(`mutation test: ${((Date.now() - started) / 1000).toFixed(1)} s`);
});
