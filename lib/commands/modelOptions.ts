/**
 * The model options `classify`, `serve` and `visualize` share: which checkpoint,
 * its card, architecture and schedule. One parseArgs spec, one translation into
 * loadModel options.
 */
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { OptionsError } from '../errors';
import { BUNDLED_MODEL } from '../bundled';
import { loadModel, type LoadOptions, type Model } from '../model';
import { parseShallowJson } from '../jsonDepth';
import { UsageError, num } from './args';

export const MODEL_OPTIONS = {
  weights: { type: 'string' },
  card: { type: 'string' },
  arch: { type: 'string' },
  heads: { type: 'string' },
  'num-heads': { type: 'string' },
  'keep-rate': { type: 'string' },
  'drop-loc': { type: 'string' },
  fuse: { type: 'boolean' },
  'img-size': { type: 'string' },
  threads: { type: 'string' },
  labels: { type: 'string' },
  device: { type: 'string' },
  precision: { type: 'string' },
} as const;

export const MODEL_HELP = `  --weights FILE        checkpoint: safetensors or PyTorch .pth (timm tensor names); default: the bundled
                        Fashion-MNIST model (models/fashion-mnist)
  --card FILE           model card (config.json) with preprocessing, labels and schedule
                        (default: config.json beside the weights, when present)
  --arch NAME           deit_tiny_patch16_224 | deit_small_patch16_224 | deit_base_patch16_224, or for a
                        Shunted Transformer shunted_t | shunted_s | shunted_b
  --heads N             attention heads, when the checkpoint matches no named arch
  --num-heads LIST      the same, one count per stage for a Shunted Transformer (e.g. 2,4,8,16)
  --keep-rate R         fraction of image tokens each dropping block keeps, in (0, 1] (default 0.7)
  --drop-loc LIST       dropping blocks, 0-based, comma separated (default 3,6,9)
  --fuse | --no-fuse    fuse dropped tokens into one (default --fuse)
  --img-size S          input side in pixels (default: the checkpoint's)
  --threads N           CPU threads (default: one per core)
  --labels FILE         class names: a JSON array, or one name per line
  --device D            auto | cpu | cuda (default: EVIT_DEVICE, else auto: CUDA when a usable GPU is present)
  --precision P         CUDA compute type: bf16 | f16 | f32 (default bf16; the CPU computes in f32)`;

export interface ModelArgs {
  weights?: string;
  card?: string;
  arch?: string;
  heads?: string;
  'num-heads'?: string;
  'keep-rate'?: string;
  'drop-loc'?: string;
  fuse?: boolean;
  'img-size'?: string;
  threads?: string;
  labels?: string;
  device?: string;
  precision?: string;
}

/** A comma-separated list of numbers, or undefined when the option was not given. */
export function numList(name: string, v: string | undefined): number[] | undefined {
  return v === undefined ? undefined : v.split(',').filter((s) => s.trim() !== '').map((s) => num(name, s)!);
}

/** Loads the model the options name (the bundled one without --weights); `defaults` fill what was not given. */
export function loadModelFromArgs(values: ModelArgs, defaults: Partial<LoadOptions> = {}): Promise<Model> {
  if (values.weights === '') throw new UsageError('--weights needs a file');
  if (values.heads !== undefined && values['num-heads'] !== undefined) throw new UsageError('pass --heads or --num-heads, not both');
  const perStage = numList('num-heads', values['num-heads']);
  return loadModel(values.weights ?? BUNDLED_MODEL, {
    card: values.card,
    arch: values.arch,
    // One count is DeiT's head count; a list is one per stage (Shunted).
    numHeads: perStage === undefined ? num('heads', values.heads) : perStage.length === 1 ? perStage[0] : perStage,
    keepRate: num('keep-rate', values['keep-rate']),
    dropLoc: numList('drop-loc', values['drop-loc']),
    fuse: values.fuse,
    imgSize: num('img-size', values['img-size']),
    threads: num('threads', values.threads) ?? defaults.threads,
    labels: values.labels === undefined ? undefined : readLabels(values.labels),
    // Checked by loadModel, which names the allowed values.
    device: values.device as LoadOptions['device'],
    precision: values.precision as LoadOptions['precision'],
  });
}

/** A name for the model the options load, as the v2 protocol's /v2/models/{name}: the checkpoint's file name. */
export function modelNameOf(weights: string | undefined): string {
  const file = weights ?? BUNDLED_MODEL;
  // The bundled checkpoint is models/<name>/model.safetensors: its folder names it.
  const base = weights === undefined ? path.basename(path.dirname(file)) : path.basename(file).replace(/\.(safetensors|pth|pt|bin)$/i, '');
  const name = base.replace(/[^A-Za-z0-9._-]+/g, '-').replace(/^[^A-Za-z0-9]+/, '');
  return name === '' ? 'evit' : name;
}

export function readLabels(file: string): string[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new OptionsError(`cannot read --labels ${file}: ${(err as Error).message}`);
  }
  if (text.trimStart().startsWith('[')) {
    const parsed = parseShallowJson(text, 2, (m) => new OptionsError(`--labels ${file}: ${m}`));
    if (!Array.isArray(parsed) || !parsed.every((l) => typeof l === 'string'))
      throw new OptionsError(`--labels ${file} must be a JSON array of strings`);
    return parsed;
  }
  return text.split(/\r?\n/).map((l) => l.trim()).filter((l) => l !== '');
}
