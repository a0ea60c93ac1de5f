'use strict';
/**
 * docs/BENCHMARKS.md is assembled from sections, one per benchmark script, so
 * each script regenerates its own part and leaves the others as they are.
 * A section lives between `<!-- section:ID -->` and `<!-- /section:ID -->`.
 */
const fs = require('node:fs');
const path = require('node:path');

const DOC = path.join(__dirname, '..', 'docs', 'BENCHMARKS.md');
const ORDER = ['forward', 'attention', 'e2e', 'serve', 'queue', 'gpu'];
const HEADER = [
  '# Benchmarks',
  '',
  'Every section below is written by the benchmark script it names; none is edited by hand.',
  'Each quotes medians and ratios measured within one run on the machine it names.',
  '',
].join('\n');

function parseSections(text) {
  const sections = new Map();
  const re = /<!-- section:([\w-]+) -->\n([\s\S]*?)<!-- \/section:\1 -->\n?/g;
  let m;
  while ((m = re.exec(text)) !== null) sections.set(m[1], m[2]);
  return sections;
}

/** Replace (or add) section `id` of `file` (default docs/BENCHMARKS.md) with `markdown`. */
function writeSection(id, markdown, file = DOC) {
  if (!/^[\w-]+$/.test(id)) throw new Error(`bad section id ${JSON.stringify(id)}`);
  const old = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '';
  const sections = parseSections(old);
  sections.set(id, markdown.endsWith('\n') ? markdown : `${markdown}\n`);
  const ids = [...ORDER.filter((k) => sections.has(k)), ...[...sections.keys()].filter((k) => !ORDER.includes(k)).sort()];
  const body = ids.map((k) => `<!-- section:${k} -->\n${sections.get(k)}<!-- /section:${k} -->\n`).join('\n');
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, `${HEADER}\n${body}`);
  return file;
}

/**
 * Replace the block `<!-- section:ID -->` … `<!-- /section:ID -->` inside any other document (such as
 * docs/SERVING.md), leaving the text around it as it is; the markers must already be there.
 */
function writeBlock(file, id, markdown) {
  if (!/^[\w-]+$/.test(id)) throw new Error(`bad section id ${JSON.stringify(id)}`);
  const text = fs.readFileSync(file, 'utf8');
  const re = new RegExp(`(<!-- section:${id} -->\n)[\\s\\S]*?(<!-- /section:${id} -->)`);
  if (!re.test(text)) throw new Error(`${file} has no <!-- section:${id} --> block`);
  fs.writeFileSync(file, text.replace(re, (_, open, close) => `${open}${markdown.endsWith('\n') ? markdown : `${markdown}\n`}${close}`));
  return file;
}

module.exports = { writeSection, writeBlock, parseSections, BENCHMARKS_DOC: DOC };
