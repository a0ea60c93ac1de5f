/** `evit classify`: classify images or .npy batches with a checkpoint. */
import { parseArgs } from 'node:util';
import type { Classification } from '../model';
import { UsageError, num } from './args';
import { MODEL_HELP, MODEL_OPTIONS, loadModelFromArgs } from './modelOptions';

export const usage = `  evit classify [--weights FILE] [options] INPUT... classify images or .npy batches`;

export const help = `classify options (the model options also apply to visualize and serve):
${MODEL_HELP}
  --top K               classes to show per input (default 5)
  --json                print one JSON object instead of text

INPUT is an image file (jpeg, png, webp, ...) or a .npy float32 [B, C, H, W] tensor
already preprocessed for the model.`;

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    allowNegative: true,
    options: {
      ...MODEL_OPTIONS,
      top: { type: 'string' },
      json: { type: 'boolean', default: false },
    },
  });
  if (values.weights === '') throw new UsageError('--weights needs a file');
  if (positionals.length === 0) throw new UsageError('classify needs at least one INPUT');
  const model = await loadModelFromArgs(values);
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

