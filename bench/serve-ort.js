#!/usr/bin/env node
'use strict';
/**
 * The peer server of the serving benchmark: a minimal fastify + onnxruntime-node server of
 * the same model (dense, exported by bench/export_onnx.py), with the same preprocessing as
 * evit and one session.run per request — what one would write without evit.
 *
 *   node bench/serve-ort.js --onnx MODEL.onnx --preprocess '{"imgSize":224,...}' [--port 0] [--threads N]
 *
 * Prints "serving on URL" on stderr; SIGTERM closes it after the requests in flight.
 */
const os = require('node:os');
const { parseArgs } = require('node:util');
const Fastify = require('fastify');
const { preprocessImage, resolvePreprocess } = require('../dist');
const { ortSession } = require('./common');

async function main() {
  const { values } = parseArgs({
    options: {
      onnx: { type: 'string' },
      preprocess: { type: 'string' },
      port: { type: 'string', default: '0' },
      threads: { type: 'string', default: String(os.availableParallelism()) },
    },
  });
  if (!values.onnx || !values.preprocess) throw new Error('usage: serve-ort.js --onnx FILE --preprocess JSON');
  const pre = resolvePreprocess(JSON.parse(values.preprocess));
  const peer = await ortSession(values.onnx, Number(values.threads));
  if (peer.skipped) throw new Error(peer.skipped);
  const { ort, session } = peer;
  const shape = [1, pre.channels, pre.imgSize, pre.imgSize];

  const app = Fastify({ bodyLimit: 10 * 1024 * 1024 });
  app.addContentTypeParser(['image/jpeg', 'image/png', 'image/webp'], { parseAs: 'buffer' }, (_req, body, done) => done(null, body));
  app.post('/v1/classify', async (req, reply) => {
    let data;
    try {
      data = await preprocessImage(req.body, pre);
    } catch (err) {
      return reply.code(400).send({ error: { code: 'BAD_IMAGE', message: err.message } });
    }
    const out = await session.run({ input: new ort.Tensor('float32', data, shape) });
    const logits = Array.from(out.logits.data);
    const max = Math.max(...logits);
    const exps = logits.map((v) => Math.exp(v - max));
    const sum = exps.reduce((a, b) => a + b, 0);
    const top = logits.map((_, i) => i).sort((a, b) => logits[b] - logits[a]).slice(0, 5).map((index) => ({ index, prob: exps[index] / sum }));
    return { results: [{ top, logits }] };
  });
  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/metrics', async (_req, reply) =>
    reply.type('text/plain').send(`process_resident_memory_bytes ${process.memoryUsage.rss()}\n`));
  const address = await app.listen({ host: '127.0.0.1', port: Number(values.port) });
  process.stderr.write(`serve-ort: serving on ${address} (onnxruntime-node, ${values.threads} intra-op threads)\n`);
  process.once('SIGTERM', () => {
    app.close().then(() => process.exit(0));
  });
}

main().catch((err) => {
  process.stderr.write(`serve-ort: ${err.message}\n`);
  process.exit(1);
});
