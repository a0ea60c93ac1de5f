/**
 * Defaults a checkpoint can carry in its safetensors `__metadata__`: the architecture name
 * and the EViT schedule it was trained with (the authors release fused and unfused models).
 *
 *   "arch":          "deit_small_patch16_224"
 *   "evit.keep_rate": "0.7"
 *   "evit.drop_loc":  "3,6,9"
 *   "evit.fuse":      "true" | "false"
 */
import { parseDecimal } from '../decimal';
import { WeightsError } from '../errors';

export interface CheckpointDefaults {
  arch?: string;
  keepRate?: number;
  dropLoc?: number[];
  fuse?: boolean;
}

export function checkpointDefaults(metadata: Record<string, string>, source: string): CheckpointDefaults {
  const out: CheckpointDefaults = {};
  const bad = (key: string, want: string): never => {
    throw new WeightsError(`${source}: __metadata__ "${key}" must be ${want}, got ${JSON.stringify(metadata[key])}`);
  };
  if (metadata.arch !== undefined) out.arch = metadata.arch;
  const rate = metadata['evit.keep_rate'];
  if (rate !== undefined) {
    const v = parseDecimal(rate);
    if (v === null) bad('evit.keep_rate', 'a decimal number such as "0.7"');
    out.keepRate = v!;
  }
  const loc = metadata['evit.drop_loc'];
  if (loc !== undefined) {
    const parts = loc.split(',').map((s) => s.trim()).filter((s) => s !== '');
    if (!parts.every((s) => /^\d+$/.test(s))) bad('evit.drop_loc', 'comma-separated block indices');
    out.dropLoc = parts.map(Number);
  }
  const fuse = metadata['evit.fuse'];
  if (fuse !== undefined) {
    if (fuse !== 'true' && fuse !== 'false') bad('evit.fuse', '"true" or "false"');
    out.fuse = fuse === 'true';
  }
  return out;
}
