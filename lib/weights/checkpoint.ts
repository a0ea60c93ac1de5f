/**
 * Reads a checkpoint in whichever format it is: safetensors, or a PyTorch
 * `.pth` zip. The format is chosen by the file's first bytes, not its name.
 */
import { WeightsError } from '../errors';
import { parsePth, type PthOptions, type SkippedTensor } from './pth';
import { ZIP_MAGIC } from './pthZip';
import { parseSafetensors, readCheckpointBytes, type TensorMap } from './safetensors';

export type CheckpointFormat = 'safetensors' | 'pth';

/** A checkpoint's tensors, decoded to float32, whatever the file format. */
export interface Checkpoint {
  format: CheckpointFormat;
  tensors: TensorMap;
  /** Stored dtype of each tensor: F32, F16, BF16 (and F64 in .pth files). */
  dtypes: Map<string, string>;
  /** Tensors present but not floating point (any integer tensor of a .pth, BatchNorm counters of a safetensors file); the model never reads them. */
  skipped: Map<string, SkippedTensor>;
  /** safetensors `__metadata__`, or for .pth the schedule found in the training options. */
  metadata: Record<string, string>;
  /** .pth: the top-level key the state dict came from (null: the top level). */
  stateDictKey: string | null;
  /** File size in bytes. */
  fileBytes: number;
}

/** Python pickle PROTO 2 followed by torch's legacy magic number (torch.save before 1.6). */
const LEGACY_TORCH_MAGIC = Buffer.from([0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19]);

/** Which format a file's first bytes announce. */
export function sniffFormat(head: Uint8Array): CheckpointFormat | 'legacy-pth' {
  const starts = (m: Buffer): boolean => head.length >= m.length && m.every((b, i) => head[i] === b);
  if (starts(ZIP_MAGIC)) return 'pth';
  if (starts(LEGACY_TORCH_MAGIC)) return 'legacy-pth';
  return 'safetensors';
}

/**
 * Parses a checkpoint held in memory.
 * @throws WeightsError if it is malformed in its format, or a legacy (pre-1.6) torch file
 */
export async function parseCheckpoint(buf: Buffer, source = '<buffer>', options: PthOptions = {}): Promise<Checkpoint> {
  const format = sniffFormat(buf);
  if (format === 'legacy-pth')
    throw new WeightsError(
      `${source}: a torch.save file in the legacy format (PyTorch before 1.6, or _use_new_zipfile_serialization=False) ` +
        'is not read; only the zip format that torch.save writes by default is',
    );
  if (format === 'pth') {
    const p = await parsePth(buf, source, options);
    return { format, tensors: p.tensors, dtypes: p.dtypes, skipped: p.skipped, metadata: p.metadata, stateDictKey: p.stateDictKey, fileBytes: buf.length };
  }
  const s = parseSafetensors(buf, source);
  return { format, tensors: s.tensors, dtypes: s.dtypes, skipped: s.skipped, metadata: s.metadata, stateDictKey: null, fileBytes: buf.length };
}

/**
 * Reads a safetensors or `.pth` checkpoint file.
 * @throws WeightsError if the file does not exist, cannot be read, or is malformed
 */
export async function readCheckpoint(path: string, options: PthOptions = {}): Promise<Checkpoint> {
  return parseCheckpoint(await readCheckpointBytes(path), path, options);
}
