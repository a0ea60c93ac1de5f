#!/usr/bin/env node
/**
 * The `evit` command line: classify images with a checkpoint, report backends.
 */
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { EvitError, OptionsError } from './errors';
import { loadModel, type Classification } from './model';
import { loadBinding } from './native';

const USAGE = `Usage:
  evit classify --weights FILE [options] INPUT...   classify images or .npy batches
  evit info                                         show the native backends
  evit --version | --help

classify options:
  --weights FILE        safetensors checkpoint (timm tensor names)
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

class UsageError extends Error {}

function version(): string {
  const pkg = JSON.parse(readFileSync(path.join(__dirname, '..', 'package.json'), 'utf8')) as { version: string };
  return pkg.version;
}

function num(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n)) throw new UsageError(`--${name} must be a number, got ${JSON.stringify(v)}`);
  return n;
}

async function classify(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    allowNegative: true,
    options: {
      weights: { type: 'string' },
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
  if (!values.weights) throw new UsageError('classify needs --weights FILE');
  if (positionals.length === 0) throw new UsageError('classify needs at least one INPUT');
  const dropLoc = values['drop-loc'] === undefined
    ? undefined
    : values['drop-loc'].split(',').filter((s) => s.trim() !== '').map((s) => num('drop-loc', s)!);
  const model = await loadModel(values.weights, {
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
}

function readLabels(file: string): string[] {
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

function info(): void {
  const b = loadBinding().backendInfo();
  const lines = [
    `evit ${version()} (Node ${process.version}, ${process.platform}-${process.arch})`,
    `cpu:  available, ${b.cpu.threads} threads, ${b.cpu.simd} kernels, ${b.cpu.blas}`,
    b.cuda.available
      ? `cuda: available, ${b.cuda.devices.map((d) => `${d.name} (sm ${d.computeCapability})`).join(', ')}`
      : `cuda: not used: ${b.cuda.reason}`,
  ];
  for (const d of b.cuda.devices) lines.push(`      device ${d.name}, compute ${d.computeCapability}, ${(d.memoryBytes / 2 ** 30).toFixed(1)} GiB`);
  process.stdout.write(lines.join('\n') + '\n');
}

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  try {
    if (cmd === undefined || cmd === '--help' || cmd === '-h' || cmd === 'help') {
      process.stdout.write(USAGE + '\n');
      return cmd === undefined ? 2 : 0;
    }
    if (cmd === '--version' || cmd === '-v') {
      process.stdout.write(version() + '\n');
      return 0;
    }
    if (cmd === 'classify') {
      await classify(rest);
      return 0;
    }
    if (cmd === 'info') {
      info();
      return 0;
    }
    throw new UsageError(`unknown command ${JSON.stringify(cmd)}`);
  } catch (err) {
    if (err instanceof UsageError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      process.stderr.write(`evit: ${(err as Error).message}\n\n${USAGE}\n`);
      return 2;
    }
    if (err instanceof EvitError) {
      process.stderr.write(`evit: ${err.message} [${err.code}]\n`);
      return err instanceof OptionsError ? 2 : 1;
    }
    process.stderr.write(`evit: unexpected error: ${(err as Error).stack ?? String(err)}\n`);
    return 1;
  }
}

if (require.main === module) {
  void main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}
