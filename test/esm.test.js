'use strict';
// The CommonJS build must also serve `import` with named exports.
const test = require('tape');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { pathToFileURL } = require('node:url');

test('ESM import gives the named exports and a working model', (t) => {
  const dist = pathToFileURL(path.join(__dirname, '..', 'dist', 'index.js')).href;
  const weights = path.join(__dirname, 'fixtures', 'tiny-evit.safetensors');
  const src = `
    import { loadModel, keepSchedule, WeightsError } from ${JSON.stringify(dist)};
    const m = await loadModel(${JSON.stringify(weights)}, { numHeads: 3 });
    const out = await m.forward({ data: new Float32Array(3 * 224 * 224), shape: [1, 3, 224, 224] });
    await m[Symbol.asyncDispose]();
    console.log(JSON.stringify({ n: out.logits.length, disposed: m.disposed, k: keepSchedule(12, 196).tokenCounts[3], err: typeof WeightsError }));
  `;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', src], { encoding: 'utf8' });
  t.equal(r.status, 0, r.stderr);
  t.deepEqual(JSON.parse(r.stdout), { n: 10, disposed: true, k: 139, err: 'function' });
  t.end();
});
