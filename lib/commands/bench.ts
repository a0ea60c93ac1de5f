/** `evit bench attn|e2e`: the benchmark scripts of bench/, the same code as `npm run bench:attn|e2e`. */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { OptionsError } from '../errors';
import { UsageError } from './args';

export const usage = `  evit bench attn|e2e [--quick] [--out DIR]         run a benchmark (from a source checkout)`;

export const help = `bench:
  attn                  attention, score row, top-k + gather + fusion and whole blocks, dense vs reorganised,
                        for 50..577 tokens at DeiT-T/S/B widths: CSV, markdown and SVG/PNG plots
  e2e                   throughput and latency against keep rate for DeiT-T/S/B, with onnxruntime-node as peer
  --quick               a small, fast run (writes bench/results/quick.* and leaves docs/BENCHMARKS.md alone)
  --out DIR             write the CSV, markdown and plots to DIR instead`;

const SCRIPTS: Record<string, string> = { attn: 'attn.js', e2e: 'e2e.js' };

export async function run(argv: string[]): Promise<number> {
  const [which, ...rest] = argv;
  if (which === undefined || !Object.hasOwn(SCRIPTS, which))
    throw new UsageError(`bench needs one of ${Object.keys(SCRIPTS).join(', ')}${which === undefined ? '' : `, got ${JSON.stringify(which)}`}`);
  const script = path.join(__dirname, '..', '..', 'bench', SCRIPTS[which]!);
  if (!existsSync(script))
    throw new OptionsError(`${script} not found: the benchmarks ship with the source repository, not the npm package`);
  return await new Promise<number>((resolve, reject) => {
    const child = spawn(process.execPath, [script, ...rest], { stdio: 'inherit' });
    child.on('error', reject);
    child.on('exit', (code, signal) => resolve(code ?? (signal ? 1 : 0)));
  });
}
