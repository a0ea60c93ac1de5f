'use strict';
// A seeded fuzz run of the HTTP server's body parsing: valid requests of every kind (raw images,
// .npy, JSON with base64 images or .npy, v2 FP32 and BYTES tensors as JSON and as binary data) are
// mutated (bytes, JSON values and structure, content types, query options, header lengths) and sent
// to a real `evit serve`. Every answer must be a 4xx in the route's JSON error format, or a 200 that
// is the answer the request means (read independently of the server, computed with the library);
// never a 5xx, a crash or a hang. EVIT_FUZZ_REQUESTS and EVIT_FUZZ_SEED change the run.
const test = require('tape');
const http = require('node:http');
const path = require('node:path');
const fs = require('node:fs');
const { spawn } = require('node:child_process');
const evit = require('../dist');
const { mulberry32 } = require('./helpers/reference');
const { seedRequests, referenceAnswer, checkResponse, isErrorBody } = require('./helpers/serveCorpus');
const { mutateRequest, send } = require('./helpers/httpMutations');

const CLI = path.join(__dirname, '..', 'dist', 'cli.js');
const REQUESTS = Number(process.env.EVIT_FUZZ_REQUESTS ?? 6000);
const SEED = Number(process.env.EVIT_FUZZ_SEED ?? 15);

function startServe() {
  const child = spawn(process.execPath, [CLI, 'serve', '--port', '0', '--model-name', 'fuzz'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (c) => { stderr += c; });
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  const address = new Promise((resolve, reject) => {
    child.stderr.on('data', () => { const m = /serving on (http:\/\/\S+)/.exec(stderr); if (m) resolve(m[1]); });
    exited.then((e) => reject(new Error(`evit serve exited (${e.code ?? e.signal}): ${stderr}`)));
  });
  return { child, exited, address, stderr: () => stderr };
}

const rssOf = (pid) => Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN) / 1024;

test(`${REQUESTS} mutated requests (seed ${SEED}): each a 4xx JSON error or the answer it means; no 5xx, crash or hang`, async (t) => {
  const model = await evit.loadModel(); // the bundled model, as `evit serve` serves it
  const seeds = await seedRequests(model, 'fuzz', SEED);
  const s = startServe();
  const base = await s.address;
  for (const seed of seeds) {
    const r = await send(base, undefined, seed);
    const why = r.status === 200 ? checkResponse(await referenceAnswer(model, seed), r) : `${r.status} ${r.raw?.toString().slice(0, 200)}`;
    t.equal(why, null, `seed ${seed.kind}: 200 with the reference answer`);
  }
  const rss0 = rssOf(s.child.pid);
  const rand = mulberry32(SEED);
  const requests = Array.from({ length: REQUESTS }, (_, i) => mutateRequest(seeds[i % seeds.length], rand));
  const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
  const tally = new Map();
  const codes = new Map();
  const failures = [];
  let next = 0;
  const t0 = performance.now();
  await Promise.all(Array.from({ length: 8 }, async () => {
    while (next < requests.length) {
      const i = next++;
      const { req, how } = requests[i];
      const r = await send(base, agent, req);
      tally.set(r.status, (tally.get(r.status) ?? 0) + 1);
      const code = r.json?.error?.code ?? r.json?.code;
      if (r.status >= 400 && typeof code === 'string') codes.set(code, (codes.get(code) ?? 0) + 1);
      let why = null;
      if (r.status === 0) why = `no answer: ${r.error}`;
      else if (r.status >= 500) why = `${r.status}: ${r.raw.toString().slice(0, 200)}`;
      else if (r.status >= 400) why = isErrorBody(req.route, r.json) ? null : `${r.status} without the JSON error body: ${r.raw.toString().slice(0, 200)}`;
      else if (r.status === 200) why = checkResponse(await referenceAnswer(model, req), r);
      else why = `status ${r.status}`;
      if (how.endsWith(': none') && r.status !== 200) why = `the unmutated request got ${r.status}`;
      if (why) failures.push(`#${i} (${how}): ${why}`);
    }
  }));
  const seconds = (performance.now() - t0) / 1000;
  agent.destroy();
  const summary = [...tally].sort((a, b) => a[0] - b[0]).map(([k, v]) => `${k}: ${v}`).join(', ');
  t.deepEqual(failures.slice(0, 10), [], `${REQUESTS} requests in ${seconds.toFixed(1)} s (${summary}); ${failures.length} failed`);
  t.ok((tally.get(200) ?? 0) > REQUESTS * 0.05, `the mutations reach past the parsers: ${tally.get(200)} answered`);
  t.ok(['EVIT_BAD_INPUT', 'EVIT_BAD_OPTIONS', 'EVIT_BAD_REQUEST', 'EVIT_UNSUPPORTED_MEDIA_TYPE'].every((c) => codes.has(c)),
    `and into each kind of refusal: ${[...codes].map(([c, n]) => `${c} ${n}`).join(', ')}`);
  t.equal(s.child.exitCode, null, 'the server is still running');
  const h = await send(base, undefined, { path: '/v1/classify', headers: { 'content-type': seeds[0].headers['content-type'] }, body: seeds[0].body });
  t.equal(checkResponse(await referenceAnswer(model, seeds[0]), h), null, 'and answers a good request correctly');
  const rss1 = rssOf(s.child.pid);
  t.ok(rss1 - rss0 < 200, `server RSS ${rss0.toFixed(0)} -> ${rss1.toFixed(0)} MiB`);
  s.child.kill('SIGTERM');
  t.equal((await s.exited).code, 0, 'exits 0 on SIGTERM');
  model.dispose();
});
