/**
 * Number(s) accepts hex, octal and binary literals ("0x1" is 1), Infinity and whitespace-only
 * strings; options and checkpoint metadata mean plain decimals, so they are parsed strictly.
 */
const DECIMAL = /^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$/;

/** The value of a plain decimal number (optionally signed, with a fraction or exponent), else null. */
export function parseDecimal(text: string): number | null {
  const t = text.trim();
  if (!DECIMAL.test(t)) return null;
  const v = Number(t);
  return Number.isFinite(v) ? v : null;
}
