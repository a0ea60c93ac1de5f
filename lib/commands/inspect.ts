/** `evit inspect`: what a checkpoint holds, without loading it on a backend. */
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { describeArchitecture, readCardFor, type InspectedArchitecture, type InspectedShuntedArchitecture, type ModelVariant } from '../spec';
import { readCheckpoint, type Checkpoint } from '../weights/checkpoint';
import type { ModelCard } from '../weights/modelCard';
import { UsageError } from './args';

export type { InspectedArchitecture, InspectedShuntedArchitecture } from '../spec';

export const usage = `  evit inspect [--json] [--key NAME] FILE           describe a .safetensors or .pth checkpoint`;

export const help = `inspect options:
  --json                print one JSON object instead of text
  --key NAME            .pth: the top-level key holding the state dict (default: model, state_dict,
                        model_ema, else the top level)`;

const ITEM_BYTES: Record<string, number> = { F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1 };

export interface CheckpointReport {
  file: string;
  format: Checkpoint['format'];
  stateDictKey: string | null;
  /** 'deit', 'deit3' or 'shunted' (Shunted Transformer). */
  variant: ModelVariant['variant'];
  layerScale: ModelVariant['layerScale'];
  posEmbedClassSlot: boolean;
  /** null when the tensors are not a model evit runs; `architectureError` says why. */
  architecture: InspectedArchitecture | InspectedShuntedArchitecture | null;
  architectureError?: string;
  tensors: number;
  parameters: number;
  /** Tensor count per stored dtype. */
  dtypes: Record<string, number>;
  /** Bytes of tensor data as stored. */
  tensorBytes: number;
  fileBytes: number;
  /** Tensors evit does not read (not floating point). */
  skipped: Array<{ name: string; dtype: string; shape: number[] }>;
  metadata: Record<string, string>;
}

/** What a checkpoint holds; the architecture is decided as loadModel decides it without options. */
export function describeCheckpoint(ckpt: Checkpoint, file: string, card: ModelCard | null = null): CheckpointReport {
  const { architecture: arch, error, variant: info } = describeArchitecture(ckpt, card);
  const dtypes: Record<string, number> = {};
  let parameters = 0;
  let tensorBytes = 0;
  for (const [name, t] of ckpt.tensors) {
    const dt = ckpt.dtypes.get(name) ?? 'F32';
    dtypes[dt] = (dtypes[dt] ?? 0) + 1;
    parameters += t.data.length;
    tensorBytes += t.data.length * ITEM_BYTES[dt]!;
  }
  const skipped = [...ckpt.skipped].map(([name, s]) => ({ name, dtype: s.dtype, shape: s.shape }));
  for (const s of skipped) {
    dtypes[s.dtype] = (dtypes[s.dtype] ?? 0) + 1;
    tensorBytes += s.shape.reduce((a, b) => a * b, 1) * ITEM_BYTES[s.dtype]!;
  }
  return {
    file,
    format: ckpt.format,
    stateDictKey: ckpt.stateDictKey,
    variant: info.variant,
    layerScale: info.layerScale,
    posEmbedClassSlot: info.posEmbedClassSlot,
    architecture: arch,
    ...(error !== undefined ? { architectureError: error } : {}),
    tensors: ckpt.tensors.size + skipped.length,
    parameters,
    dtypes,
    tensorBytes,
    fileBytes: ckpt.fileBytes,
    skipped,
    metadata: ckpt.metadata,
  };
}

/** 1234567 -> "1.2 MB" (powers of 1000, as file managers show). */
export function formatBytes(n: number): string {
  const units = ['B', 'kB', 'MB', 'GB'];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) {
    n /= 1000;
    i++;
  }
  return i === 0 ? `${n} B` : `${n.toFixed(1)} ${units[i]}`;
}

export function formatReport(r: CheckpointReport): string {
  const lines: string[] = [];
  const row = (k: string, v: string): number => lines.push(`${(k + ':').padEnd(14)}${v}`);
  const where = r.format === 'pth' ? `PyTorch zip, state dict ${r.stateDictKey === null ? 'at the top level' : `under "${r.stateDictKey}"`}` : 'safetensors';
  row('file', `${r.file} (${where})`);
  const variant = r.variant === 'deit'
    ? 'DeiT'
    : r.variant === 'shunted'
    ? 'Shunted Transformer (drops no tokens: EViT schedules do not apply)'
    : `DeiT III (${[
        r.layerScale ? `LayerScale ${r.layerScale}` : null,
        r.posEmbedClassSlot ? null : 'position embedding without a class-token slot',
      ].filter((s) => s !== null).join(', ')})`;
  row('variant', variant);
  const a = r.architecture;
  if (a && 'embedDims' in a) {
    const heads = a.numHeads === null ? 'heads unknown (pass --num-heads or --arch when running it)' : `heads ${a.numHeads.join('/')}`;
    row('architecture', `${a.arch ?? 'unnamed'}: embed ${a.embedDims.join('/')}, depths ${a.depths.join('/')}, ${heads}, ` +
      `sr ratios ${a.srRatios.join('/')}, MLP ${a.mlpHidden.join('/')}, num_conv ${a.numConv}, ${a.numClasses} classes, ` +
      `${a.inChans} channels (${a.imgSize} px as released; any size whose stage grids the sr ratios divide)`);
  } else if (a) {
    const heads = a.numHeads === null ? 'heads unknown (pass --heads or --arch when running it)' : `${a.numHeads} heads`;
    row('architecture', `${a.arch ?? 'unnamed'}: embed ${a.embedDim}, depth ${a.depth}, ${heads}, patch ${a.patchSize}, ` +
      `grid ${a.gridSize[0]}x${a.gridSize[1]} (${a.imgSize} px), ${a.numClasses} classes, MLP ${a.mlpHidden}, ${a.inChans} channels`);
  } else {
    row('architecture', `not a model evit runs: ${r.architectureError}`);
  }
  const dts = Object.entries(r.dtypes).map(([d, n]) => (Object.keys(r.dtypes).length > 1 ? `${d} x${n}` : d)).join(', ');
  row('tensors', `${r.tensors} (${dts}), ${r.parameters < 1e6 ? r.parameters.toLocaleString('en-US') : `${(r.parameters / 1e6).toFixed(1)} M`} parameters, ${formatBytes(r.tensorBytes)} of data, file ${formatBytes(r.fileBytes)}`);
  if (r.skipped.length)
    row('not read', r.skipped.map((s) => `${s.name} (${s.dtype} [${s.shape.join(', ')}])`).join(', '));
  const meta = Object.entries(r.metadata).map(([k, v]) => `${k}=${v}`).join(', ');
  if (meta) row('metadata', meta);
  return lines.join('\n') + '\n';
}

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { json: { type: 'boolean', default: false }, key: { type: 'string' } },
  });
  if (positionals.length !== 1) throw new UsageError('inspect needs exactly one FILE');
  const file = positionals[0]!;
  const ckpt = await readCheckpoint(path.resolve(file), { key: values.key });
  // A card that does not parse only loses what it would add: inspect describes the weights.
  const card = await readCardFor(path.resolve(file), undefined).catch(() => null);
  const report = describeCheckpoint(ckpt, file, card);
  process.stdout.write(values.json ? JSON.stringify(report) + '\n' : formatReport(report));
  return 0;
}
