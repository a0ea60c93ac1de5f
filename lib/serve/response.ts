/**
 * The result JSON of a classification, as POST /v1/classify answers it and as a
 * queue worker completes a job with it: one shape for both, so a client can move
 * between HTTP and the queue without changing how it reads results.
 */
import type { BatchedClassify } from './batcher';
import { InputError } from '../errors';
import type { TopClass } from '../model';

export interface ClassifyResult {
  top: TopClass[];
  logits: number[];
  /** Origins of the kept tokens per dropping block; only when asked for. */
  kept?: Array<{ block: number; tokens: number[] }>;
}

export interface ClassifyResponse {
  /** The keep rate that served the request (null when the model runs explicit keep counts). */
  keepRate: number | null;
  /** Images in the forward pass that served it. */
  batchSize: number;
  queueMs: number;
  inferenceMs: number;
  results: ClassifyResult[];
}

const round = (ms: number): number => Math.round(ms * 1000) / 1000;

/**
 * Refuses an answer whose logits are not finite: finite inputs as large as 3e38 overflow float32
 * inside the pass, and JSON would carry the NaN as null, a 200 that means nothing.
 */
export function checkFiniteResults(out: BatchedClassify): BatchedClassify {
  out.results.forEach((r, i) => {
    if (r.logits.some((v) => !Number.isFinite(v)))
      throw new InputError(`the logits of image ${i} are not finite: its values overflow float32 in the forward pass; send preprocessed values of ordinary size`);
  });
  return out;
}

export function classifyResponse(out: BatchedClassify, withKept: boolean): ClassifyResponse {
  return {
    keepRate: out.keepRate,
    batchSize: out.batchSize,
    queueMs: round(out.queueMs),
    inferenceMs: round(out.runMs),
    results: out.results.map((r) => ({ top: r.top, logits: r.logits, ...(withKept ? { kept: r.kept } : {}) })),
  };
}
