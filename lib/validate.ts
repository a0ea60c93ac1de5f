/** Checks of numeric options shared by the API's entry points, so each is written (and worded) once. */
import { OptionsError } from './errors';

/** `v` when it is an integer in [1, max]; OptionsError naming the range otherwise. */
export function intUpTo(name: string, v: unknown, max: number): number {
  if (!Number.isSafeInteger(v) || (v as number) < 1 || (v as number) > max)
    throw new OptionsError(`${name} must be an integer from 1 to ${max}, got ${JSON.stringify(v)}`);
  return v as number;
}
