/** Per-image classification results, built one way for Model.classify and the batcher. */
import type { KeptTokens } from './model';

export interface TopClass {
  index: number;
  prob: number;
  label: string | null;
}

export interface Classification {
  input: string;
  logits: number[];
  top: TopClass[];
  kept: { block: number; tokens: number[] }[];
}

/** How an input is named in its result: the path, or a Buffer's size. */
export function inputName(input: string | Buffer): string {
  return typeof input === 'string' ? input : `<buffer ${input.length} bytes>`;
}

/** The k most probable classes (softmax of the logits), most probable first, ties by index. */
export function topClasses(logits: number[], k: number, labels: readonly string[] | null): TopClass[] {
  const max = Math.max(...logits);
  const exps = logits.map((v) => Math.exp(v - max));
  const sum = exps.reduce((a, b) => a + b, 0);
  return logits
    .map((_, i) => i)
    .sort((a, b) => logits[b]! - logits[a]! || a - b)
    .slice(0, k)
    .map((index) => ({ index, prob: exps[index]! / sum, label: labels?.[index] ?? null }));
}

/** One result per name, from the rows of a forward result [names.length, classes] in the same order. */
export function classifications(
  names: readonly string[],
  out: { logits: Float32Array; shape: readonly [number, number]; kept: readonly KeptTokens[] },
  top: number,
  labels: readonly string[] | null,
): Classification[] {
  const classes = out.shape[1];
  const k = Math.min(top, classes);
  return names.map((input, i) => {
    const logits = Array.from(out.logits.subarray(i * classes, (i + 1) * classes));
    return {
      input,
      logits,
      top: topClasses(logits, k, labels),
      kept: out.kept.map((t) => ({ block: t.block, tokens: Array.from(t.tokens.subarray(i * t.shape[1], (i + 1) * t.shape[1])) })),
    };
  });
}
