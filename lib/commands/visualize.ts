/** `evit visualize`: draw which patches each dropping block keeps, fuses or discards. */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { OptionsError } from '../errors';
import { visualize } from '../visualize';
import { UsageError, num } from './args';
import { MODEL_OPTIONS, loadModelFromArgs } from './modelOptions';

export const usage = `  evit visualize --out PNG [options] IMAGE          draw the kept, fused and dropped patches`;

export const help = `visualize options:
  --weights FILE        checkpoint (default: the bundled Fashion-MNIST model)
  --out PNG             where to write the picture: the model's crop, then one panel per dropping block
  model options as for classify: --card, --arch, --heads, --keep-rate, --drop-loc, --fuse, --img-size, --threads, --labels,
  --device, --precision
  --scale K             integer magnification of each panel (default: about 224 px per panel)
  --gap PX              pixels between panels (default 4)
  --json                print the masks as JSON ({grid, blocks: [{block, counts, mask}]}) instead of text

Discarded patches are darkened; patches that live on inside a fused token are tinted blue.`;

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    allowNegative: true,
    options: {
      ...MODEL_OPTIONS,
      out: { type: 'string' },
      scale: { type: 'string' },
      gap: { type: 'string' },
      json: { type: 'boolean', default: false },
    },
  });
  if (values.weights === '') throw new UsageError('--weights needs a file');
  if (!values.out) throw new UsageError('visualize needs --out PNG');
  if (positionals.length !== 1) throw new UsageError(`visualize takes exactly one IMAGE, got ${positionals.length}`);
  const model = await loadModelFromArgs(values);
  try {
    const v = await visualize(model, positionals[0]!, { scale: num('scale', values.scale), gap: num('gap', values.gap) });
    try {
      writeFileSync(values.out, v.png);
    } catch (err) {
      throw new OptionsError(`cannot write --out ${values.out}: ${(err as Error).message}`);
    }
    if (values.json) {
      const blocks = v.masks.blocks.map((b) => ({ block: b.block, counts: b.counts[0], mask: Array.from(b.mask) }));
      process.stdout.write(JSON.stringify({ out: values.out, width: v.width, height: v.height, grid: v.masks.grid, blocks }) + '\n');
    } else {
      const lines = [`${values.out}: ${v.width}x${v.height}, ${v.masks.blocks.length + 1} panels of ${v.panel} px`];
      if (v.masks.blocks.length === 0) lines.push('no block reorganised its tokens (dense schedule): only the input panel');
      for (const b of v.masks.blocks) {
        const c = b.counts[0]!;
        lines.push(`  after block ${b.block}: ${c.kept} patches kept, ${c.fused} fused, ${c.dropped} dropped`);
      }
      process.stdout.write(lines.join('\n') + '\n');
    }
  } finally {
    model.dispose();
  }
  return 0;
}
