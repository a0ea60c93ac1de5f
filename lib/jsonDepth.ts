/**
 * JSON.parse recurses on nesting: a small body nested millions deep costs seconds and hundreds
 * of megabytes before it fails with a RangeError. Every JSON evit reads (checkpoint headers,
 * model cards, label files, HTTP bodies) has a known, shallow shape, so its nesting is checked
 * first by a linear scan that allocates nothing.
 */

/** The deepest nesting of objects and arrays in `text`, scanning no further than one level past `limit`. */
export function jsonNestingDepth(text: string, limit: number): number {
  let depth = 0;
  let deepest = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++; // backslash: skip the escaped character
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) {
      inString = true;
    } else if (c === 0x7b || c === 0x5b) {
      if (++depth > deepest) {
        deepest = depth;
        if (deepest > limit) return deepest;
      }
    } else if (c === 0x7d || c === 0x5d) {
      depth--;
    }
  }
  return deepest;
}

/** JSON.parse after the nesting check; `fail` builds the caller's typed error. */
export function parseShallowJson(text: string, limit: number, fail: (message: string) => Error): unknown {
  if (jsonNestingDepth(text, limit) > limit) throw fail(`JSON is nested deeper than ${limit} levels`);
  try {
    return JSON.parse(text);
  } catch (e) {
    throw fail(`not valid JSON: ${(e as Error).message}`);
  }
}
