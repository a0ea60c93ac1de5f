/**
 * The fastify plugin behind `evit serve`: POST /v1/classify, GET /healthz and
 * GET /metrics, backed by one Batcher. Mount it on an existing server with
 * `app.register(evitPlugin, { model, prefix: '/vision' })`; its body parsers,
 * error handler and hooks stay inside the plugin's own scope.
 */
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import { Batcher, type BatchedClassify, type BatcherOptions } from './batcher';
import { ClosedError, OptionsError } from '../errors';
import type { Model } from '../model';
import { checkImage, IMAGE_TYPES, jsonInput, NPY_TYPE, rawInput, requestOptions, type ClassifyInput, type RequestOptions } from './decode';
import { toHttpError } from './httpErrors';
import { ServerMetrics } from './metrics';

export interface EvitPluginOptions {
  /** The model to serve; a Batcher is made for it from `batch`. Not needed when `batcher` is given. */
  model?: Model;
  /** An existing batcher to serve through (then `batch` is ignored and the caller closes it). */
  batcher?: Batcher;
  /** Batching, queue bound and adaptive keep-rate options. */
  batch?: BatcherOptions;
  /** Largest request body in bytes (413 above it). Default 10 MiB. */
  bodyLimit?: number;
  /** Largest image, width × height (× frames), checked from the header before decoding (413). Default 40 megapixels. */
  maxPixels?: number;
  /** Classes reported per image when the request does not say. Default 5. */
  top?: number;
}

export const DEFAULT_BODY_LIMIT = 10 * 1024 * 1024;
export const DEFAULT_MAX_PIXELS = 40_000_000;

function positiveInt(name: string, v: unknown, fallback: number): number {
  if (v === undefined) return fallback;
  if (!Number.isSafeInteger(v) || (v as number) < 1) throw new OptionsError(`${name} must be a positive integer, got ${String(v)}`);
  return v as number;
}

export const evitPlugin: FastifyPluginAsync<EvitPluginOptions> = async (app, options) => {
  if (options === null || typeof options !== 'object') throw new OptionsError('evitPlugin options must be an object');
  if (!options.batcher && !options.model) throw new OptionsError('evitPlugin needs a model (or a batcher)');
  const bodyLimit = positiveInt('bodyLimit', options.bodyLimit, DEFAULT_BODY_LIMIT);
  const maxPixels = positiveInt('maxPixels', options.maxPixels, DEFAULT_MAX_PIXELS);
  const defaultTop = positiveInt('top', options.top, 5);
  const ownsBatcher = !options.batcher;
  const batcher = options.batcher ?? new Batcher(options.model!, options.batch);
  const model = batcher.model;
  const metrics = new ServerMetrics(batcher);
  metrics.start();

  // Requests this plugin has accepted and not yet answered; close() waits for them.
  let active = 0;
  let shuttingDown = false;
  const idle: Array<() => void> = [];
  const settle = (): void => {
    active--;
    if (active === 0) for (const resolve of idle.splice(0)) resolve();
  };

  // Only these content types: anything else is a 415 from fastify before the body is read.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser([...IMAGE_TYPES, NPY_TYPE], { parseAs: 'buffer', bodyLimit }, (_req, body, done) => done(null, body));
  app.addContentTypeParser('application/json', { parseAs: 'string', bodyLimit }, app.getDefaultJsonParser('error', 'error'));

  app.setErrorHandler((err, req, reply) => {
    const h = toHttpError(err);
    if (h.internal) req.log.error({ err }, 'request failed');
    // Fastify's own messages do not say what would have been accepted.
    const fst = (err as { code?: string }).code;
    if (fst === 'FST_ERR_CTP_INVALID_MEDIA_TYPE' || fst === 'FST_ERR_CTP_EMPTY_TYPE' || fst === 'FST_ERR_CTP_INVALID_TYPE')
      h.body.error.message = `content type ${JSON.stringify(req.headers['content-type'] ?? '')} is not supported; send ${[...IMAGE_TYPES, NPY_TYPE, 'application/json'].join(', ')}`;
    else if (fst === 'FST_ERR_CTP_BODY_TOO_LARGE')
      h.body.error.message = `request body is over the limit of ${bodyLimit} bytes`;
    if (h.status === 429) void reply.header('retry-after', '1');
    if (h.status === 503) void reply.header('connection', 'close');
    return reply.code(h.status).send(h.body);
  });

  app.addHook('onRequest', async (_req, reply) => {
    if (shuttingDown) {
      void reply.header('connection', 'close');
      throw new ClosedError('the server is shutting down');
    }
    active++;
    reply.raw.once('close', settle);
  });

  app.addHook('preClose', async () => {
    shuttingDown = true;
    // Accepted requests may still be queueing: run them now rather than after maxWaitMs.
    if (ownsBatcher) batcher.drain();
  });

  app.addHook('onClose', async () => {
    if (active > 0) await new Promise<void>((resolve) => idle.push(resolve));
    if (ownsBatcher) await batcher.close();
    metrics.stop();
  });

  app.post('/v1/classify', { bodyLimit }, async (req: FastifyRequest, reply: FastifyReply) => {
    const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
    let input: ClassifyInput;
    let opts: RequestOptions;
    const query = (req.query ?? {}) as Record<string, unknown>;
    if (Buffer.isBuffer(req.body)) {
      input = rawInput(req.body, type);
      opts = requestOptions(query);
    } else {
      ({ input, options: opts } = jsonInput(req.body));
    }
    const wantKept = query.kept === '1' || query.kept === 'true' || (req.body as { kept?: unknown })?.kept === true;
    if (input.kind === 'image') await checkImage(input.image, maxPixels);

    // A client that hangs up stops its request: it leaves the queue if it has not run yet.
    const ac = new AbortController();
    const onGone = (): void => {
      if (!reply.raw.writableFinished) ac.abort(new Error('client closed the connection'));
    };
    reply.raw.once('close', onGone);
    let out: BatchedClassify;
    try {
      out = await batcher.classify(input.kind === 'image' ? input.image : input.tensor, {
        top: opts.top ?? defaultTop,
        keepRate: opts.keepRate,
        signal: ac.signal,
      });
    } finally {
      reply.raw.off('close', onGone);
    }
    void reply.header('x-evit-keep-rate', String(out.keepRate));
    return {
      keepRate: out.keepRate,
      batchSize: out.batchSize,
      queueMs: round(out.queueMs),
      inferenceMs: round(out.runMs),
      results: out.results.map((r) => ({ top: r.top, logits: r.logits, ...(wantKept ? { kept: r.kept } : {}) })),
    };
  });

  app.addHook('onResponse', async (req, reply) => {
    if (req.routeOptions.url?.endsWith('/v1/classify')) metrics.observeRequest(reply.statusCode, reply.elapsedTime / 1000);
  });

  app.get('/healthz', async (_req, reply) => {
    const body = {
      status: shuttingDown || batcher.closing ? 'closing' : 'ok',
      backend: model.disposed ? null : model.backend,
      keepRate: batcher.keepRate,
      queued: batcher.queued,
      inFlight: batcher.inFlight,
    };
    return reply.code(body.status === 'ok' ? 200 : 503).send(body);
  });

  app.get('/metrics', async (_req, reply) => {
    return reply.type('text/plain; version=0.0.4; charset=utf-8').send(metrics.render());
  });
};

const round = (ms: number): number => Math.round(ms * 1000) / 1000;
