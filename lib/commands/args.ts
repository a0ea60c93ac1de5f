/** Argument helpers shared by the `evit` subcommands. */
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { parseDecimal } from '../decimal';

/** A mistake in how the command was called: printed with the usage, exit code 2. */
export class UsageError extends Error {}

export function version(): string {
  const pkg = JSON.parse(readFileSync(path.join(__dirname, '..', '..', 'package.json'), 'utf8')) as { version: string };
  return pkg.version;
}

/** Parse a numeric option value, or undefined when it was not given. */
export function num(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = parseDecimal(v);
  if (n === null) throw new UsageError(`--${name} must be a number (decimal, like 0.7), got ${JSON.stringify(v)}`);
  return n;
}
