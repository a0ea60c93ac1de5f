/** Checks of numeric options shared by the API's entry points, so each is written (and worded) once. */
import { OptionsError } from './errors';

/** `v`, or `fallback` when it is undefined; OptionsError unless it is a positive integer. */
export function positiveInt(name: string, v: unknown, fallback: number): number;
export function positiveInt(name: string, v: unknown, fallback?: undefined): number | undefined;
export function positiveInt(name: string, v: unknown, fallback?: number): number | undefined {
  if (v === undefined) return fallback;
  if (!Number.isSafeInteger(v) || (v as number) < 1) throw new OptionsError(`${name} must be a positive integer, got ${String(v)}`);
  return v as number;
}

/** `v` when it is an integer in [1, max]; OptionsError naming the range otherwise. */
export function intUpTo(name: string, v: unknown, max: number): number {
  if (!Number.isSafeInteger(v) || (v as number) < 1 || (v as number) > max)
    throw new OptionsError(`${name} must be an integer from 1 to ${max}, got ${JSON.stringify(v)}`);
  return v as number;
}
