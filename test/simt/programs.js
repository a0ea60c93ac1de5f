'use strict';
// The emulator programs the tape tests build: which sources, from which tree.
const fs = require('node:fs');
const path = require('node:path');
const { ROOT } = require('./build');

/** Kernel sources of cuda/ (the .cu files without host orchestration), relative to the tree root. */
const KERNEL_SOURCES = ['attention.cu', 'attention_mma.cu', 'conv2d.cu', 'convert.cu', 'cuda_check.cu', 'depthwise_conv.cu',
  'layer_norm.cu', 'linear.cu', 'linear_mma.cu', 'device_properties.cu', 'patch_embed.cu', 'smem_limit.cu', 'token_mean.cu', 'topk_gather_fuse.cu'].map((f) => `cuda/${f}`);

/** The kernel test program, from `root` (the repository or a mutant copy of it). */
function kernelProgram({ root = ROOT, flavour = 'release', name = 'simt_kernels', extra = [] } = {}) {
  for (const f of KERNEL_SOURCES) if (!fs.existsSync(path.join(root, f))) throw new Error(`${f} is missing from ${root}`);
  return { name, root, flavour, units: [...KERNEL_SOURCES, 'test/simt/tests/kernels_test.cc', ...extra], include: ['cuda', 'test/simt/tests'] };
}

module.exports = { KERNEL_SOURCES, kernelProgram };

/**
 * A copy of the kernel sources and the emulator's test sources under the temp directory, with
 * `file` changed by replacing `find` (which must occur exactly once) with `replace`. Returns
 * the tree's root, or throws saying the mutation no longer applies.
 */
function mutantTree(id, { file, find, replace }) {
  const os = require('node:os');
  const root = path.join(os.tmpdir(), 'evit-simt-mutants', id);
  fs.rmSync(root, { recursive: true, force: true });
  for (const dir of ['cuda', 'test/simt/tests']) fs.cpSync(path.join(ROOT, dir), path.join(root, dir), { recursive: true });
  const target = path.join(root, file);
  const text = fs.readFileSync(target, 'utf8');
  const at = text.indexOf(find);
  if (at < 0 || text.indexOf(find, at + 1) >= 0)
    throw new Error(`${file}: the mutation site ${JSON.stringify(find.slice(0, 60))} is not there exactly once`);
  fs.writeFileSync(target, text.slice(0, at) + replace + text.slice(at + find.length));
  return root;
}

module.exports.mutantTree = mutantTree;
