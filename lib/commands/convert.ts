/**
 * `evit convert`: a .pth (or safetensors) checkpoint to safetensors, in the
 * chosen dtype, with the metadata loadModel reads. Tensor names are kept as
 * the source has them (a DDP `module.` prefix aside), so DeiT III LayerScale
 * vectors and a class-slot-free position embedding survive unchanged and
 * nothing is lost; the runtime folds them when it loads the file.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { OptionsError, WeightsError } from '../errors';
import { checkNoDropSchedule, checkRecordedSchedule, describeArchitecture } from '../spec';
import { namedArch } from '../weights/architecture';
import { checkpointDefaults } from '../weights/metadata';
import { namedShuntedArch } from '../weights/shunted';
import { readCheckpoint, type Checkpoint } from '../weights/checkpoint';
import { serializeSafetensors, type DType, type TensorToWrite } from '../weights/safetensors';
import { UsageError, num } from './args';
import { formatBytes } from './inspect';

export const usage = `  evit convert IN OUT.safetensors [options]         convert a .pth checkpoint to safetensors`;

export const help = `convert options:
  --dtype f32|f16|bf16  dtype of every tensor written (default: as stored; F64 becomes F32)
  --key NAME            .pth: the top-level key holding the state dict (default: model, state_dict,
                        model_ema, else the top level)
  --arch NAME           record the named architecture (supplies the head count at load):
                        a DeiT arch, or shunted_t | shunted_s | shunted_b
  --keep-rate R         record the EViT keep rate the weights were trained with
  --drop-loc LIST       record the dropping blocks, 0-based, comma separated
  --fuse | --no-fuse    record whether the dropped tokens were fused
A schedule the checkpoint records (an EViT training script's args) is kept unless overridden.`;

const DTYPES: Record<string, DType> = { f32: 'F32', f16: 'F16', bf16: 'BF16' };
const F16_MAX = 65504;

/** The requested dtype, else the stored one where safetensors has it (F64 is written as F32). */
function outputDType(stored: string | undefined, requested: DType | undefined): DType {
  return requested ?? (stored === 'F16' || stored === 'BF16' ? stored : 'F32');
}

export interface ConvertOptions {
  dtype?: DType;
  key?: string;
  /** Entries to record in `__metadata__`, replacing what the checkpoint carries. */
  metadata?: Record<string, string>;
}

/**
 * The safetensors bytes for a checkpoint.
 * @throws OptionsError when a value does not fit F16, or the metadata does not fit the model
 * @throws WeightsError when the checkpoint is not a model evit runs
 */
export function toSafetensors(ckpt: Checkpoint, source: string, options: ConvertOptions = {}): Buffer {
  const stored = describeArchitecture(ckpt, null);
  if (!stored.architecture) throw new WeightsError(`${source}: not converted: ${stored.error}`);
  const metadata: Record<string, string> = { format: 'pt', ...ckpt.metadata, ...options.metadata };
  if (metadata.arch === undefined && stored.architecture.arch !== null) metadata.arch = stored.architecture.arch;
  // What is recorded must load: decided as loadModel decides, from the metadata written (no card beside OUT).
  const shunted = stored.variant.variant === 'shunted';
  if (metadata.arch !== undefined && !(shunted ? namedShuntedArch(metadata.arch) : namedArch(metadata.arch)))
    throw new OptionsError(`${source}: unknown arch "${metadata.arch}"`);
  const recorded = describeArchitecture({ ...ckpt, metadata }, null);
  if (!recorded.architecture) throw new WeightsError(`${source}: not converted: ${recorded.error}`);
  if ('embedDims' in recorded.architecture) checkNoDropSchedule(checkpointDefaults(metadata, source), `${source}: `);
  else checkRecordedSchedule(metadata, recorded.architecture, source);
  const out = new Map<string, TensorToWrite>();
  for (const [name, t] of ckpt.tensors) {
    const dtype = outputDType(ckpt.dtypes.get(name), options.dtype);
    if (dtype === 'F16') {
      for (let i = 0; i < t.data.length; i++) {
        const v = t.data[i]!;
        if (Number.isFinite(v) && Math.abs(v) > F16_MAX)
          throw new OptionsError(`${source}: tensor ${name} holds ${v}, beyond the F16 range (±${F16_MAX}); use --dtype bf16 or f32`);
      }
    }
    out.set(name, { dtype, shape: t.shape, data: t.data });
  }
  return serializeSafetensors(out, metadata);
}

/**
 * Where OUT is written: the file it names, through symlinks. Refuses an OUT that is the input under
 * any name (a symlink, a hard link, another path to the same file) and one that exists but is not a
 * regular file (a FIFO, a device, a directory), which renaming over it would destroy.
 */
async function outputTarget(input: string, output: string): Promise<string> {
  const out = path.resolve(output);
  let existing: import('node:fs').Stats | null = null;
  let target = out;
  try {
    target = await fsp.realpath(out);
    existing = await fsp.stat(target);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw new OptionsError(`cannot check ${output}: ${(e as Error).message}`);
  }
  if (existing && !existing.isFile())
    throw new UsageError(`convert writes regular files; ${output} exists and is ${fileKind(existing)}`);
  let source: import('node:fs').Stats | null = null;
  try {
    source = await fsp.stat(path.resolve(input));
  } catch {
    // A missing input is reported when it is read.
  }
  const same = existing && source && existing.dev === source.dev && existing.ino === source.ino;
  if (same || (source && target === (await fsp.realpath(path.resolve(input)))))
    throw new UsageError(`convert would overwrite its input (${output} is ${input}); choose another OUT`);
  return target;
}

function fileKind(s: import('node:fs').Stats): string {
  if (s.isDirectory()) return 'a directory';
  if (s.isFIFO()) return 'a FIFO';
  if (s.isCharacterDevice()) return 'a character device';
  if (s.isBlockDevice()) return 'a block device';
  if (s.isSocket()) return 'a socket';
  return 'not a regular file';
}

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    allowNegative: true,
    options: {
      dtype: { type: 'string' },
      key: { type: 'string' },
      arch: { type: 'string' },
      'keep-rate': { type: 'string' },
      'drop-loc': { type: 'string' },
      fuse: { type: 'boolean' },
    },
  });
  if (positionals.length !== 2) throw new UsageError('convert needs IN and OUT');
  const [input, output] = positionals as [string, string];
  let dtype: DType | undefined;
  if (values.dtype !== undefined) {
    dtype = DTYPES[values.dtype.toLowerCase()];
    if (!dtype) throw new UsageError(`--dtype must be f32, f16 or bf16, got ${JSON.stringify(values.dtype)}`);
  }
  const target = await outputTarget(input, output);
  const metadata: Record<string, string> = {};
  if (values.arch !== undefined) metadata.arch = values.arch;
  const rate = num('keep-rate', values['keep-rate']);
  if (rate !== undefined) metadata['evit.keep_rate'] = String(rate);
  if (values['drop-loc'] !== undefined) {
    const blocks = values['drop-loc'].split(',').map((s) => s.trim()).filter((s) => s !== '');
    if (!blocks.every((s) => /^\d+$/.test(s))) throw new UsageError(`--drop-loc must be comma-separated block indices, got ${JSON.stringify(values['drop-loc'])}`);
    metadata['evit.drop_loc'] = blocks.join(',');
  }
  if (values.fuse !== undefined) metadata['evit.fuse'] = String(values.fuse);

  const ckpt = await readCheckpoint(path.resolve(input), { key: values.key });
  const bytes = toSafetensors(ckpt, input, { dtype, metadata });
  // Write beside the target and rename, so a failed write never leaves a partial OUT. The temporary
  // name is created exclusively: it never follows or replaces something already there.
  const tmp = `${target}.${process.pid}.tmp`;
  try {
    await fsp.writeFile(tmp, bytes, { flag: 'wx' });
    await fsp.rename(tmp, target);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') await fsp.rm(tmp, { force: true });
    throw new OptionsError(`cannot write ${output}: ${(e as Error).message}`, { cause: e });
  }
  const dtypes = [...new Set([...ckpt.tensors.keys()].map((n) => outputDType(ckpt.dtypes.get(n), dtype)))];
  process.stdout.write(`wrote ${output}: ${ckpt.tensors.size} tensors (${dtypes.join(', ')}), ${formatBytes(bytes.length)}\n`);
  if (ckpt.skipped.size)
    process.stderr.write(`evit: not written (not floating point, unused by the model): ${[...ckpt.skipped.keys()].join(', ')}\n`);
  return 0;
}
