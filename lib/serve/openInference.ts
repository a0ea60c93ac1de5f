/**
 * The Open Inference Protocol v2 routes (the KServe / Triton HTTP API), beside
 * /v1/classify: GET /v2, /v2/health/live, /v2/health/ready, /v2/models/{name}[/versions/{v}]
 * (metadata), .../ready, and POST .../infer. Errors are `{"error": message}` as the
 * protocol says, with this package's `code` beside it.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { drainRefusedBody, HttpError, toHttpError } from './httpErrors';
import { EXTENSIONS, inferResponse, modelMetadata, parseInferRequest } from './inferTensors';
import type { BatchedClassify, Batcher } from './batcher';
import type { Tensor4D } from '../model';

export interface ServingState {
  /** The batcher once the model is loaded; throws a 503 (EVIT_NOT_READY / EVIT_CLOSED) before and after. */
  batcher(): Batcher;
  /** Loaded and accepting work (false while loading, while draining and while the batch queue is full). */
  readonly ready: boolean;
  /** Runs a request's tensor or images (checked, decoded in their lane, stopped if the client hangs up). */
  classify(reply: FastifyReply, batcher: Batcher, input: Tensor4D | Buffer[], options: { top: number; keepRate: number | undefined }): Promise<BatchedClassify>;
  /** Records the error code a request was answered with (for the metrics). */
  noteError(req: FastifyRequest, code: string): void;
  readonly modelName: string;
  readonly modelVersion: string;
  readonly maxPixels: number;
  readonly bodyLimit: number;
  readonly version: string;
}

interface ModelParams {
  name: string;
  version?: string;
}

/** Registers the v2 routes in their own scope: any content type is read as bytes (JSON, or JSON + binary tensors). */
export async function openInferenceRoutes(app: FastifyInstance, opts: { state: ServingState }): Promise<void> {
  const { state } = opts;
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: state.bodyLimit }, (_req, body, done) => done(null, body));

  app.setErrorHandler((err, req, reply) => {
    const h = toHttpError(err);
    if (h.internal) req.log.error({ err }, 'request failed');
    const fst = (err as { code?: string }).code;
    if (fst === 'FST_ERR_CTP_BODY_TOO_LARGE') {
      h.body.error.message = `request body is over the limit of ${state.bodyLimit} bytes`;
      drainRefusedBody(req, reply, state.bodyLimit);
    }
    if (h.status === 429 || h.body.error.code === 'EVIT_NOT_READY') void reply.header('retry-after', '1');
    if (h.body.error.code === 'EVIT_CLOSED') void reply.header('connection', 'close');
    state.noteError(req, h.body.error.code);
    return reply.code(h.status).send({ error: h.body.error.message, code: h.body.error.code });
  });

  const health = { config: { health: true } };
  app.get('/v2', async () => ({ name: 'evit', version: state.version, extensions: EXTENSIONS }));
  // The protocol: 200 means true, a 4xx false.
  app.get('/v2/health/live', health, async () => ({ live: true }));
  app.get('/v2/health/ready', health, async (_req, reply) => reply.code(state.ready ? 200 : 400).send({ ready: state.ready }));

  const checkModel = (p: ModelParams): void => {
    if (p.name !== state.modelName)
      throw new HttpError(404, 'EVIT_NOT_FOUND', `no model ${JSON.stringify(p.name)}; this server serves ${JSON.stringify(state.modelName)}`);
    if (p.version !== undefined && p.version !== state.modelVersion)
      throw new HttpError(404, 'EVIT_NOT_FOUND', `model ${state.modelName} has no version ${JSON.stringify(p.version)}; its version is ${state.modelVersion}`);
  };

  const ready = async (req: FastifyRequest<{ Params: ModelParams }>, reply: FastifyReply) => {
    checkModel(req.params);
    return reply.code(state.ready ? 200 : 400).send({ name: state.modelName, ready: state.ready });
  };
  app.get('/v2/models/:name/ready', health, ready);
  app.get('/v2/models/:name/versions/:version/ready', health, ready);

  const metadata = async (req: FastifyRequest<{ Params: ModelParams }>) => {
    checkModel(req.params);
    return modelMetadata(state.batcher().model, state.modelName, state.modelVersion);
  };
  app.get('/v2/models/:name', metadata);
  app.get('/v2/models/:name/versions/:version', metadata);

  const infer = async (req: FastifyRequest<{ Params: ModelParams }>, reply: FastifyReply) => {
    checkModel(req.params);
    const batcher = state.batcher();
    const model = batcher.model;
    if (!Buffer.isBuffer(req.body)) throw new HttpError(400, 'EVIT_BAD_REQUEST', 'the inference request body is empty');
    const headerLength = req.headers['inference-header-content-length'];
    const request = parseInferRequest(req.body, Array.isArray(headerLength) ? headerLength[0] : headerLength, model);
    const out = await state.classify(reply, batcher, request.input.kind === 'images' ? request.input.images : request.input.tensor,
      { top: 1, keepRate: request.keepRate });
    const { json, binary } = inferResponse(request, {
      logits: out.results.map((r) => r.logits),
      keepRate: out.keepRate,
      batchSize: out.batchSize,
      queueMs: Math.round(out.queueMs * 1000) / 1000,
      inferenceMs: Math.round(out.runMs * 1000) / 1000,
    }, state.modelName, state.modelVersion, model.labels);
    void reply.header('x-evit-keep-rate', String(out.keepRate));
    if (binary.length === 0) return reply.type('application/json; charset=utf-8').send(json);
    const header = Buffer.from(JSON.stringify(json), 'utf8');
    void reply.header('inference-header-content-length', String(header.length));
    return reply.type('application/octet-stream').send(Buffer.concat([header, ...binary]));
  };
  const inferRoute = { bodyLimit: state.bodyLimit, config: { metricsRoute: 'infer' } };
  app.post('/v2/models/:name/infer', inferRoute, infer);
  app.post('/v2/models/:name/versions/:version/infer', inferRoute, infer);
}
