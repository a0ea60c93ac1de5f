'use strict';
// The emulator programs the tape tests build: which sources, from which tree.
const fs = require('node:fs');
const path = require('node:path');
const { ROOT } = require('./build');

/** Kernel sources of cuda/ (the .cu files without host orchestration), relative to the tree root. */
const KERNEL_SOURCES = ['attention.cu', 'attention_mma.cu', 'convert.cu', 'cuda_check.cu', 'layer_norm.cu', 'linear.cu',
  'linear_mma.cu', 'patch_embed.cu', 'smem_limit.cu', 'topk_gather_fuse.cu'].map((f) => `cuda/${f}`);

/** The kernel test program, from `root` (the repository or a mutant copy of it). */
function kernelProgram({ root = ROOT, flavour = 'release', name = 'simt_kernels', extra = [] } = {}) {
  for (const f of KERNEL_SOURCES) if (!fs.existsSync(path.join(root, f))) throw new Error(`${f} is missing from ${root}`);
  return { name, root, flavour, units: [...KERNEL_SOURCES, 'test/simt/tests/kernels_test.cc', ...extra], include: ['cuda', 'test/simt/tests'] };
}

module.exports = { KERNEL_SOURCES, kernelProgram };
