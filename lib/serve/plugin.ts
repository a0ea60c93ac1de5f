/**
 * The fastify plugin behind `evit serve`: POST /v1/classify, the Open Inference
 * Protocol v2 routes (/v2/health/*, /v2/models/{name}[/infer]), GET /healthz and
 * GET /metrics, backed by one Batcher. Mount it on an existing server with
 * `app.register(evitPlugin, { model, prefix: '/vision' })`; its body parsers,
 * error handler and hooks stay inside the plugin's own scope.
 *
 * The model (or batcher) may be a promise: the routes are there at once, health
 * says live but not ready, and work is refused with 503 until it resolves, so a
 * load balancer can probe a server whose model is still loading.
 */
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import { Batcher, type BatchedClassify, type BatcherOptions } from './batcher';
import { ClosedError, OptionsError } from '../errors';
import type { Model, Tensor4D } from '../model';
import { checkImages, checkJsonDepth, IMAGE_TYPES, imageShapeOf, jsonInput, NPY_TYPE, rawInput, requestOptions, type ClassifyInput, type RequestOptions } from './decode';
import { DecodeLanes, type DecodeLaneOptions } from './decodeLanes';
import { drainRefusedBody, HttpError, toHttpError } from './httpErrors';
import { ServingMetrics, type MetricsRoute, type ServingMetricsOptions } from './metrics';
import { openInferenceRoutes, type ServingState } from './openInference';
import { checkFiniteResults, classifyResponse } from './response';
import { positiveInt } from '../validate';
import { version as packageVersion } from '../commands/args';

export interface EvitPluginOptions extends DecodeLaneOptions {
  /** The model to serve (or a promise of it); a Batcher is made for it from `batch`. Not needed when `batcher` is given. */
  model?: Model | Promise<Model>;
  /** An existing batcher (or a promise of one) to serve through; then `batch` is ignored and the caller closes it. */
  batcher?: Batcher | Promise<Batcher>;
  /** Batching, queue bound and adaptive keep-rate options. */
  batch?: BatcherOptions;
  /** Largest request body in bytes (413 above it). Default 10 MiB. */
  bodyLimit?: number;
  /** Largest image, width × height (× frames), checked from the header before decoding (413). Default 40 megapixels. */
  maxPixels?: number;
  /** Classes reported per image when the request does not say. Default 5. */
  top?: number;
  /** The model's name in the v2 routes (/v2/models/{name}). Default "evit". */
  modelName?: string;
  /** The model's version in the v2 routes. Default "1". */
  modelVersion?: string;
  /** Where the metrics are registered (your prom-client registry), or a ServingMetrics to share. Default: a registry of the plugin's own. */
  metrics?: ServingMetricsOptions | ServingMetrics;
}

export const DEFAULT_BODY_LIMIT = 10 * 1024 * 1024;
export const DEFAULT_MAX_PIXELS = 40_000_000;
const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

function pathName(name: string, v: unknown, fallback: string): string {
  if (v === undefined) return fallback;
  if (typeof v !== 'string' || !NAME.test(v)) throw new OptionsError(`${name} must be letters, digits, '.', '_' or '-', got ${JSON.stringify(v)}`);
  return v;
}

const isPromise = <T>(v: unknown): v is Promise<T> => typeof (v as { then?: unknown })?.then === 'function';

export const evitPlugin: FastifyPluginAsync<EvitPluginOptions> = async (app, options) => {
  if (options === null || typeof options !== 'object') throw new OptionsError('evitPlugin options must be an object');
  if (!options.batcher && !options.model) throw new OptionsError('evitPlugin needs a model (or a batcher)');
  const bodyLimit = positiveInt('bodyLimit', options.bodyLimit, DEFAULT_BODY_LIMIT);
  const maxPixels = positiveInt('maxPixels', options.maxPixels, DEFAULT_MAX_PIXELS);
  const defaultTop = positiveInt('top', options.top, 5);
  const modelName = pathName('modelName', options.modelName, 'evit');
  const modelVersion = pathName('modelVersion', options.modelVersion, '1');
  const lanes = new DecodeLanes(options);
  const ownsBatcher = !options.batcher;
  const metrics = options.metrics instanceof ServingMetrics ? options.metrics : new ServingMetrics(options.metrics);
  const ownsMetrics = !(options.metrics instanceof ServingMetrics);
  if (ownsMetrics) metrics.start();
  metrics.attachLanes(lanes);

  // The error code each failed request was answered with, for the metrics.
  const errorCodes = new WeakMap<FastifyRequest, string>();

  // Requests this plugin has accepted and not yet answered; close() waits for them.
  let active = 0;
  let shuttingDown = false;
  const idle: Array<() => void> = [];
  const settle = (): void => {
    active--;
    if (active === 0) for (const resolve of idle.splice(0)) resolve();
  };

  let batcher: Batcher | null = null;
  let loadError: Error | null = null;
  const adopt = (b: Batcher): Batcher => {
    batcher = b;
    metrics.attach(b);
    metrics.ready = !shuttingDown;
    return b;
  };
  let loading: Promise<unknown> | null = null;
  const source = options.batcher ?? options.model!;
  const toBatcher = (v: Batcher | Model): Batcher => (v instanceof Batcher ? v : new Batcher(v, options.batch));
  if (isPromise<Batcher | Model>(source)) {
    loading = source.then(
      (v) => { adopt(toBatcher(v)); },
      (err: Error) => {
        loadError = err;
        app.log.error({ err }, 'the model failed to load');
      },
    ).catch((err: Error) => {
      // new Batcher() refused the options for this model.
      loadError = err;
      app.log.error({ err }, 'the model failed to load');
    }).finally(() => { loading = null; });
  } else {
    adopt(toBatcher(source));
  }

  // A full batch queue refuses every new request: not ready until it has room.
  const saturated = (b: Batcher): boolean => b.queued >= b.maxQueue;

  /**
   * Runs one request's tensor or images through the batcher. Images are checked from their headers,
   * then decoded in the lane their pixels call for. A client that hangs up stops its request: it
   * leaves the lane or the batch queue, and its images not yet decoded are never decoded.
   */
  const classify = async (reply: FastifyReply, b: Batcher, input: Tensor4D | Buffer[], opts: { top: number; keepRate: number | undefined }): Promise<BatchedClassify> => {
    const ac = new AbortController();
    const onGone = (): void => {
      if (!reply.raw.writableFinished) ac.abort(new Error('client closed the connection'));
    };
    reply.raw.once('close', onGone);
    try {
      if (!Array.isArray(input)) return checkFiniteResults(await b.classify(input, { ...opts, signal: ac.signal }));
      const pixels = await checkImages(input, maxPixels);
      return checkFiniteResults(await lanes.run(pixels, { maxPixels, signal: ac.signal }, (decode) => b.classify(input, { ...opts, signal: ac.signal, decode })));
    } finally {
      reply.raw.off('close', onGone);
    }
  };

  const state: ServingState = {
    // Requests that arrive while draining are refused in onRequest; accepted ones still run.
    batcher(): Batcher {
      if (batcher) return batcher;
      if (loadError) throw new HttpError(503, 'EVIT_NOT_READY', `the model failed to load: ${loadError.message}`);
      throw new HttpError(503, 'EVIT_NOT_READY', 'the model is still loading; retry shortly');
    },
    get ready() {
      const b = batcher as Batcher | null;
      return b !== null && !shuttingDown && !b.closing && !saturated(b);
    },
    classify,
    noteError: (req, code) => errorCodes.set(req, code),
    modelName,
    modelVersion,
    maxPixels,
    bodyLimit,
    version: packageVersion(),
  };

  // Only these content types: anything else is a 415 from fastify before the body is read.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser([...IMAGE_TYPES, NPY_TYPE], { parseAs: 'buffer', bodyLimit }, (_req, body, done) => done(null, body));
  const parseJson = app.getDefaultJsonParser('error', 'error');
  app.addContentTypeParser('application/json', { parseAs: 'string', bodyLimit }, (req, body, done) => {
    const text = typeof body === 'string' ? body : body.toString('utf8');
    try {
      checkJsonDepth(text, 'the JSON body');
    } catch (err) {
      done(err as Error, undefined);
      return;
    }
    parseJson(req, text, done);
  });

  app.setErrorHandler((err, req, reply) => {
    const h = toHttpError(err);
    if (h.internal) req.log.error({ err }, 'request failed');
    // Fastify's own messages do not say what would have been accepted.
    const fst = (err as { code?: string }).code;
    if (fst === 'FST_ERR_CTP_INVALID_MEDIA_TYPE' || fst === 'FST_ERR_CTP_EMPTY_TYPE' || fst === 'FST_ERR_CTP_INVALID_TYPE')
      h.body.error.message = `content type ${JSON.stringify(req.headers['content-type'] ?? '')} is not supported; send ${[...IMAGE_TYPES, NPY_TYPE, 'application/json'].join(', ')}`;
    else if (fst === 'FST_ERR_CTP_BODY_TOO_LARGE') {
      h.body.error.message = `request body is over the limit of ${bodyLimit} bytes`;
      drainRefusedBody(req, reply, bodyLimit);
    }
    if (h.status === 429 || h.body.error.code === 'EVIT_NOT_READY') void reply.header('retry-after', '1');
    if (h.body.error.code === 'EVIT_CLOSED') void reply.header('connection', 'close');
    errorCodes.set(req, h.body.error.code);
    return reply.code(h.status).send(h.body);
  });

  app.addHook('onRequest', async (req, reply) => {
    // Probes still answer while draining: live, and not ready.
    if ((req.routeOptions.config as { health?: boolean } | undefined)?.health) return;
    if (shuttingDown) {
      void reply.header('connection', 'close');
      throw new ClosedError('the server is shutting down');
    }
    active++;
    reply.raw.once('close', settle);
  });

  app.addHook('preClose', async () => {
    shuttingDown = true;
    metrics.ready = false;
    // Accepted requests may still be queueing: run them now rather than after maxWaitMs.
    if (ownsBatcher) batcher?.drain();
  });

  app.addHook('onClose', async () => {
    if (active > 0) await new Promise<void>((resolve) => idle.push(resolve));
    if (loading) await loading;
    if (ownsBatcher && batcher) await (batcher as Batcher).close();
    if (ownsMetrics) metrics.stop();
  });

  app.post('/v1/classify', { bodyLimit, config: { metricsRoute: 'classify' } }, async (req: FastifyRequest, reply: FastifyReply) => {
    const b = state.batcher();
    const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
    let input: ClassifyInput;
    let opts: RequestOptions;
    const query = (req.query ?? {}) as Record<string, unknown>;
    if (Buffer.isBuffer(req.body)) {
      input = rawInput(req.body, type, imageShapeOf(b.model));
      opts = requestOptions(query);
    } else {
      ({ input, options: opts } = jsonInput(req.body, imageShapeOf(b.model)));
    }
    const wantKept = query.kept === '1' || query.kept === 'true' || (req.body as { kept?: unknown })?.kept === true;
    const out = await classify(reply, b, input.kind === 'image' ? [input.image] : input.tensor, { top: opts.top ?? defaultTop, keepRate: opts.keepRate });
    void reply.header('x-evit-keep-rate', String(out.keepRate));
    return classifyResponse(out, wantKept);
  });

  app.addHook('onResponse', async (req, reply) => {
    const route = (req.routeOptions.config as { metricsRoute?: MetricsRoute } | undefined)?.metricsRoute;
    if (route) metrics.observeRequest(route, reply.statusCode, reply.elapsedTime / 1000, errorCodes.get(req));
  });

  app.get('/healthz', { config: { health: true } }, async (_req, reply) => {
    const b = batcher as Batcher | null;
    const status = shuttingDown || b?.closing ? 'closing' : b ? (saturated(b) ? 'overloaded' : 'ok') : loadError ? 'failed' : 'loading';
    const body = {
      status,
      backend: b && !b.model.disposed ? b.model.backend : null,
      keepRate: b?.keepRate ?? null,
      queued: b?.queued ?? 0,
      maxQueue: b?.maxQueue ?? null,
      inFlight: b?.inFlight ?? 0,
      largeDecodes: lanes.largeRunning,
      largeWaiting: lanes.largeWaiting,
    };
    return reply.code(status === 'ok' ? 200 : 503).send(body);
  });

  app.get('/metrics', async (_req, reply) => {
    return reply.type(metrics.contentType).send(await metrics.render());
  });

  app.register(openInferenceRoutes, { state });
};
