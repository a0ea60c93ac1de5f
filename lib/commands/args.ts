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

/** A byte count option: 1048576, 512k or 10m; undefined when the option was not given. */
export function byteCount(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const m = /^(\d+)\s*([km]?)b?$/i.exec(v.trim());
  if (!m) throw new UsageError(`--${name} must be a byte count like 1048576, 512k or 10m, got ${JSON.stringify(v)}`);
  return Number(m[1]) * (m[2]!.toLowerCase() === 'm' ? 1024 * 1024 : m[2]!.toLowerCase() === 'k' ? 1024 : 1);
}
