/** `evit classify`: classify images or .npy batches with a checkpoint. */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { OptionsError } from '../errors';
import { loadModel, type Classification } from '../model';
import { BUNDLED_MODEL } from '../bundled';
import { UsageError, num } from './args';

export const usage = `  evit classify [--weights FILE] [options] INPUT... classify images or .npy batches`;

export const help = `classify options:
  --weights FILE        checkpoint: safetensors or PyTorch .pth (timm tensor names); default: the bundled
                        Fashion-MNIST model (models/fashion-mnist)
  --card FILE           model card (config.json) with preprocessing, labels and schedule
                        (default: config.json beside the weights, when present)
  --arch NAME           deit_tiny_patch16_224 | deit_small_patch16_224 | deit_base_patch16_224
  --heads N             attention heads, when the checkpoint matches no named arch
  --keep-rate R         fraction of image tokens each dropping block keeps, in (0, 1] (default 0.7)
  --drop-loc LIST       dropping blocks, 0-based, comma separated (default 3,6,9)
  --fuse | --no-fuse    fuse dropped tokens into one (default --fuse)
  --img-size S          input side in pixels (default: the checkpoint's)
  --top K               classes to show per input (default 5)
  --threads N           CPU threads (default: one per core)
  --labels FILE         class names: a JSON array, or one name per line
  --json                print one JSON object instead of text

INPUT is an image file (jpeg, png, webp, ...) or a .npy float32 [B, C, H, W] tensor
already preprocessed for the model.`;

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    allowNegative: true,
    options: {
      weights: { type: 'string' },
      card: { type: 'string' },
      arch: { type: 'string' },
      heads: { type: 'string' },
      'keep-rate': { type: 'string' },
      'drop-loc': { type: 'string' },
      fuse: { type: 'boolean' },
      'img-size': { type: 'string' },
      top: { type: 'string' },
      threads: { type: 'string' },
      labels: { type: 'string' },
      json: { type: 'boolean', default: false },
    },
  });
  if (values.weights === '') throw new UsageError('--weights needs a file');
  if (positionals.length === 0) throw new UsageError('classify needs at least one INPUT');
  const dropLoc = values['drop-loc'] === undefined
    ? undefined
    : values['drop-loc'].split(',').filter((s) => s.trim() !== '').map((s) => num('drop-loc', s)!);
  const model = await loadModel(values.weights ?? BUNDLED_MODEL, {
    card: values.card,
    arch: values.arch,
    numHeads: num('heads', values.heads),
    keepRate: num('keep-rate', values['keep-rate']),
    dropLoc,
    fuse: values.fuse,
    imgSize: num('img-size', values['img-size']),
    threads: num('threads', values.threads),
    labels: values.labels === undefined ? undefined : readLabels(values.labels),
  });
  try {
    const results = await model.classify(positionals, { top: num('top', values.top) });
    if (values.json) {
      process.stdout.write(JSON.stringify({ results }) + '\n');
    } else {
      process.stdout.write(formatText(results, model.schedule.tokenCounts, model.schedule.dropBlocks));
    }
  } finally {
    model.dispose();
  }
  return 0;
}

export function readLabels(file: string): string[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new OptionsError(`cannot read --labels ${file}: ${(err as Error).message}`);
  }
  if (text.trimStart().startsWith('[')) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (err) {
      throw new OptionsError(`--labels ${file} is not valid JSON: ${(err as Error).message}`);
    }
    if (!Array.isArray(parsed) || !parsed.every((l) => typeof l === 'string'))
      throw new OptionsError(`--labels ${file} must be a JSON array of strings`);
    return parsed;
  }
  return text.split(/\r?\n/).map((l) => l.trim()).filter((l) => l !== '');
}

function formatText(results: Classification[], counts: readonly number[], drops: readonly number[]): string {
  const lines: string[] = [];
  if (drops.length) lines.push(`tokens after blocks ${drops.join(', ')}: ${drops.map((b) => counts[b]).join(' / ')}`);
  for (const r of results) {
    lines.push(r.input);
    for (const t of r.top) {
      const name = t.label ?? `class ${t.index}`;
      lines.push(`  ${(t.prob * 100).toFixed(2).padStart(6)}%  ${name}`);
    }
  }
  return lines.join('\n') + '\n';
}

