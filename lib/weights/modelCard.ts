/**
 * The model card: a `config.json` beside the weights saying how the model was
 * trained and how to feed it. The runtime takes its preprocessing, labels,
 * head count and default EViT schedule from it; explicit options override it.
 *
 * {
 *   "architecture": { "numHeads": 3, ... },            // (a list per stage for a Shunted Transformer); other fields are informative
 *   "preprocess":   { "imgSize": 28, "resizeSize": 28, "cropPct": 1, "mean": [0.286], "std": [0.353],
 *                     "channels": 1, "interpolation": "bicubic" },
 *   "labels":       ["T-shirt/top", ...],
 *   "schedule":     { "keepRate": 0.7, "dropLoc": [2, 4, 6], "fuse": true },
 *   ...                                                 // training recipe, accuracy: informative
 * }
 */
import { parseShallowJson } from '../jsonDepth';
import { readFile } from 'node:fs/promises';
import * as path from 'node:path';
import { WeightsError } from '../errors';

export interface ModelCard {
  /** The file it was read from. */
  file: string;
  /** DeiT: one count; Shunted Transformer: one per stage. */
  numHeads?: number | number[];
  arch?: string;
  imgSize?: number;
  preprocess: { resizeSize?: number; cropPct?: number; mean?: number[]; std?: number[]; channels?: 1 | 3 };
  labels?: string[];
  schedule: { keepRate?: number; dropLoc?: number[]; fuse?: boolean };
  /** The whole parsed card, for callers that want its informative fields. */
  raw: Record<string, unknown>;
}

/** The card that belongs to a weights file: `config.json` in the same folder. */
export function cardPathFor(weights: string): string {
  return path.join(path.dirname(weights), 'config.json');
}

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Reads and validates a model card; `required` false returns null when the file does not exist. */
export async function readModelCard(file: string, required: boolean): Promise<ModelCard | null> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if (!required && (err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new WeightsError(`cannot read the model card ${file}: ${(err as Error).message}`, { cause: err });
  }
  // A card is a few objects of scalars and short arrays: anything much deeper is not one.
  const raw = parseShallowJson(text, 8, (m) => new WeightsError(`model card ${file}: ${m}`));
  return parseModelCard(raw, file);
}

export function parseModelCard(raw: unknown, file: string): ModelCard {
  const bad = (field: string, want: string, got: unknown): never => {
    throw new WeightsError(`model card ${file}: ${field} must be ${want}, got ${JSON.stringify(got)}`);
  };
  if (!isObj(raw)) return bad('the top level', 'an object', raw);
  const section = (key: string): Obj => {
    const v = raw[key];
    if (v === undefined) return {};
    return isObj(v) ? v : bad(key, 'an object', v);
  };
  const posInt = (field: string, v: unknown): number | undefined => {
    if (v === undefined) return undefined;
    return Number.isSafeInteger(v) && (v as number) > 0 ? (v as number) : bad(field, 'a positive integer', v);
  };
  const numbers = (field: string, v: unknown): number[] | undefined => {
    if (v === undefined) return undefined;
    if (!Array.isArray(v) || v.length === 0 || !v.every((x) => typeof x === 'number' && Number.isFinite(x)))
      return bad(field, 'a non-empty array of numbers', v);
    return v as number[];
  };

  const arch = section('architecture');
  const pre = section('preprocess');
  const sched = section('schedule');
  const card: ModelCard = { file, preprocess: {}, schedule: {}, raw };

  if (Array.isArray(arch.numHeads)) {
    const h = arch.numHeads;
    card.numHeads = h.length > 0 && h.every((x) => Number.isSafeInteger(x) && (x as number) > 0)
      ? (h as number[])
      : bad('architecture.numHeads', 'a positive integer, or one per stage', h);
  } else {
    card.numHeads = posInt('architecture.numHeads', arch.numHeads);
  }
  if (arch.name !== undefined) card.arch = typeof arch.name === 'string' ? arch.name : bad('architecture.name', 'a string', arch.name);

  card.imgSize = posInt('preprocess.imgSize', pre.imgSize);
  card.preprocess.resizeSize = posInt('preprocess.resizeSize', pre.resizeSize);
  if (pre.cropPct !== undefined) {
    const c = pre.cropPct;
    card.preprocess.cropPct = typeof c === 'number' && c > 0 && c <= 1 ? c : bad('preprocess.cropPct', 'a number in (0, 1]', c);
  }
  card.preprocess.mean = numbers('preprocess.mean', pre.mean);
  card.preprocess.std = numbers('preprocess.std', pre.std);
  if (pre.channels !== undefined)
    card.preprocess.channels = pre.channels === 1 || pre.channels === 3 ? pre.channels : bad('preprocess.channels', '1 or 3', pre.channels);
  // The runtime resizes with bicubic filtering, as timm evaluates DeiT; a card asking for another filter would be misread.
  if (pre.interpolation !== undefined && pre.interpolation !== 'bicubic')
    bad('preprocess.interpolation', '"bicubic" (the only resampling filter evit implements)', pre.interpolation);

  if (raw.labels !== undefined) {
    const l = raw.labels;
    card.labels = Array.isArray(l) && l.every((s) => typeof s === 'string') ? (l as string[]) : bad('labels', 'an array of strings', l);
  }

  if (sched.keepRate !== undefined) {
    const k = sched.keepRate;
    card.schedule.keepRate = typeof k === 'number' && k > 0 && k <= 1 ? k : bad('schedule.keepRate', 'a number in (0, 1]', k);
  }
  if (sched.dropLoc !== undefined) {
    const d = sched.dropLoc;
    card.schedule.dropLoc = Array.isArray(d) && d.every((x) => Number.isSafeInteger(x) && (x as number) >= 0)
      ? (d as number[])
      : bad('schedule.dropLoc', 'an array of block indices', d);
  }
  if (sched.fuse !== undefined)
    card.schedule.fuse = typeof sched.fuse === 'boolean' ? sched.fuse : bad('schedule.fuse', 'true or false', sched.fuse);
  return card;
}
