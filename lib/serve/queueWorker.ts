/**
 * A BullMQ worker that classifies queue jobs through a Batcher: it holds up to
 * `concurrency` jobs at once, so jobs from the queue share forward passes like
 * concurrent HTTP requests do, and completes each with the JSON that
 * POST /v1/classify answers. Forward passes run off the event loop, so BullMQ
 * keeps renewing the locks of jobs while they wait or run; a job is only stalled
 * (and handed to another worker) when its worker is really gone.
 *
 * A bad job (undecodable image, bad options, a file outside the allowed
 * directories...) fails at once with the HTTP API's error code and is not
 * retried; anything else (a download that failed, a native error) is an
 * ordinary failure, retried as the job's `attempts` allow.
 */
import { hostname } from 'node:os';
import { realpathSync } from 'node:fs';
import * as path from 'node:path';
import { UnrecoverableError, Worker, type Job } from 'bullmq';
import { Batcher, type BatcherOptions } from './batcher';
import { OptionsError } from '../errors';
import type { Model } from '../model';
import { positiveInt } from '../validate';
import { checkImages, imageShapeOf } from './decode';
import { DecodeLanes, type DecodeLaneOptions } from './decodeLanes';
import { toHttpError } from './httpErrors';
import { readJob, type JobData, type JobInputLimits } from './jobInput';
import { ServingMetrics, type ServingMetricsOptions } from './metrics';
import { DEFAULT_BODY_LIMIT, DEFAULT_MAX_PIXELS } from './plugin';
import { checkFiniteResults, classifyResponse, type ClassifyResponse } from './response';
import { connectionOptions, queueName, type QueueConnection } from './connection';

export interface WorkerOptions extends Omit<DecodeLaneOptions, 'largeQueue'> {
  /** Redis: a redis:// URL or BullMQ connection options. */
  connection: QueueConnection;
  /** The BullMQ queue to drain. */
  queue: string;
  /** BullMQ key prefix. Default "bull". */
  prefix?: string;
  /** Jobs held at once (waiting for a batch or running). Default twice the batcher's maxBatchSize, at most its maxQueue. */
  concurrency?: number;
  /** Batching options for the worker's own batcher. */
  batch?: BatcherOptions;
  /** A batcher to share instead (then `batch` is ignored and the caller closes it). */
  batcher?: Batcher;
  /** Classes reported per image when the job does not say. Default 5. */
  top?: number;
  /** Largest image, width × height (× frames), read from its header. Default 40 megapixels. */
  maxPixels?: number;
  /** Largest image in bytes (inline, file or download). Default 10 MiB. */
  maxBytes?: number;
  /** Directories whose files jobs may name in "path". Default none. */
  allowPaths?: readonly string[];
  /** URL prefixes jobs may name in "url" (e.g. "https://images.example.com/"). Default none. */
  allowUrls?: readonly string[];
  /** Time allowed for one download, ms. Default 10 000. */
  fetchTimeoutMs?: number;
  /** How long a job's lock lasts without renewal, ms; a dead worker's jobs are recovered after it. Default 30 000 (BullMQ's). */
  lockDurationMs?: number;
  /** How often this worker looks for stalled jobs, ms. Default 30 000 (BullMQ's). */
  stalledIntervalMs?: number;
  /** Times a job may stall before it fails. Default 1 (BullMQ's). */
  maxStalledCount?: number;
  /** This worker's name, stored on the jobs it processes. Default host:pid. */
  name?: string;
  /** Metrics: options for the worker's own, or a ServingMetrics to share. */
  metrics?: ServingMetricsOptions | ServingMetrics;
  /** Errors of the Redis connection and BullMQ (the worker keeps retrying). Default: a process warning, once per message a minute. */
  onError?: (err: Error) => void;
}

export interface EvitWorker {
  readonly worker: Worker<JobData, ClassifyResponse>;
  readonly batcher: Batcher;
  readonly metrics: ServingMetrics;
  /** Connected, running and not closing. */
  readonly ready: boolean;
  /** Resolves once connected to Redis and taking jobs. */
  waitUntilReady(): Promise<void>;
  /** Stops taking jobs, finishes the ones it holds, then closes the connection (and its own batcher). */
  close(): Promise<void>;
}

function stringList(name: string, v: unknown): string[] {
  if (v === undefined) return [];
  if (!Array.isArray(v) || !v.every((s) => typeof s === 'string' && s !== '')) throw new OptionsError(`${name} must be a list of non-empty strings`);
  return v;
}

function allowedDirs(v: unknown): string[] {
  return stringList('allowPaths', v).map((d) => {
    try {
      return realpathSync(path.resolve(d));
    } catch (err) {
      throw new OptionsError(`allowPaths: cannot use ${JSON.stringify(d)}: ${(err as Error).message}`);
    }
  });
}

function allowedUrls(v: unknown): string[] {
  return stringList('allowUrls', v).map((u) => {
    let url: URL;
    try {
      url = new URL(u);
    } catch {
      throw new OptionsError(`allowUrls: ${JSON.stringify(u)} is not a URL`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new OptionsError(`allowUrls: ${JSON.stringify(u)} is not http or https`);
    // A prefix must end at a path boundary: "https://a.example" would also allow "https://a.example.evil.org".
    if (!url.href.endsWith('/')) throw new OptionsError(`allowUrls: ${JSON.stringify(u)} must end with "/"`);
    return url.href;
  });
}

/** The code, message and whether retrying can help, for an error a job failed with. */
export function jobFailure(err: unknown): { code: string; message: string; retry: boolean } {
  const h = toHttpError(err);
  const code = (err as { code?: unknown })?.code;
  if (h.internal) {
    const evit = typeof code === 'string' && code.startsWith('EVIT_') ? code : 'EVIT_INTERNAL';
    return { code: evit, message: (err as Error)?.message ?? String(err), retry: true };
  }
  // The client's own mistakes do not change on a retry; overload, timeouts and shutdown do.
  const retry = h.status === 408 || h.status === 429 || h.status === 499 || h.status >= 500;
  return { code: h.body.error.code, message: h.body.error.message, retry };
}

function warnOnce(): (err: Error) => void {
  const last = new Map<string, number>();
  return (err) => {
    const now = Date.now();
    if ((last.get(err.message) ?? -Infinity) > now - 60_000) return;
    last.set(err.message, now);
    process.emitWarning(`evit worker: ${err.message}`);
  };
}

export function createWorker(model: Model, options: WorkerOptions): EvitWorker {
  if (options === null || typeof options !== 'object') throw new OptionsError('createWorker options must be an object');
  if (!options.batcher && (!model || typeof model.forward !== 'function')) throw new OptionsError('createWorker needs a loaded Model');
  const queue = queueName(options.queue);
  const connection = connectionOptions(options.connection);
  const ownsBatcher = !options.batcher;
  const batcher = options.batcher ?? new Batcher(model, options.batch);
  const concurrency = positiveInt('concurrency', options.concurrency, Math.min(2 * batcher.maxBatchSize, batcher.maxQueue));
  // Every job held must fit the batch queue, or the worker would refuse its own jobs.
  if (concurrency > batcher.maxQueue)
    throw new OptionsError(`concurrency ${concurrency} is over the batcher's maxQueue ${batcher.maxQueue}: raise batch.maxQueue or lower concurrency`);
  const defaultTop = positiveInt('top', options.top, 5);
  const maxPixels = positiveInt('maxPixels', options.maxPixels, DEFAULT_MAX_PIXELS);
  const limits: JobInputLimits = {
    allowPaths: allowedDirs(options.allowPaths),
    allowUrls: allowedUrls(options.allowUrls),
    maxBytes: positiveInt('maxBytes', options.maxBytes, DEFAULT_BODY_LIMIT),
    fetchTimeoutMs: positiveInt('fetchTimeoutMs', options.fetchTimeoutMs, 10_000),
    imageShape: imageShapeOf(batcher.model),
  };
  // The jobs held wait for the large lane: the worker's concurrency already bounds them.
  const lanes = new DecodeLanes({ largeImagePixels: options.largeImagePixels, largeDecodes: options.largeDecodes, largeQueue: Infinity });
  const lockDuration = positiveInt('lockDurationMs', options.lockDurationMs, 30_000);
  const stalledInterval = positiveInt('stalledIntervalMs', options.stalledIntervalMs, 30_000);
  const maxStalledCount = positiveInt('maxStalledCount', options.maxStalledCount, 1);
  const metrics = options.metrics instanceof ServingMetrics ? options.metrics : new ServingMetrics(options.metrics);
  const ownsMetrics = !(options.metrics instanceof ServingMetrics);
  metrics.attach(batcher);
  metrics.attachLanes(lanes);
  if (ownsMetrics) metrics.start();
  const onError = options.onError ?? warnOnce();

  let closing = false;
  let closed: Promise<void> | null = null;
  let connected = false;
  const processJob = async (job: Job<JobData, ClassifyResponse>): Promise<ClassifyResponse> => {
    metrics.jobStarted();
    try {
      const req = await readJob(job.data, limits);
      const opts = { top: req.top ?? defaultTop, keepRate: req.keepRate };
      let out;
      if (req.input.kind === 'image') {
        const image = [req.input.image];
        const pixels = await checkImages(image, maxPixels);
        out = await lanes.run(pixels, { maxPixels }, (decode) => batcher.classify(image, { ...opts, decode }));
      } else {
        out = await batcher.classify(req.input.tensor, opts);
      }
      checkFiniteResults(out);
      metrics.jobFinished('completed', (Date.now() - job.timestamp) / 1000);
      return classifyResponse(out, req.kept);
    } catch (err) {
      const f = jobFailure(err);
      const again = f.retry && job.attemptsMade + 1 < (job.opts.attempts ?? 1);
      metrics.jobFinished(again ? 'retry' : 'failed', (Date.now() - job.timestamp) / 1000, f.code);
      // The code leads the message: it is what a producer reads back from failedReason.
      const text = `${f.code}: ${f.message}`;
      throw f.retry ? new Error(text, { cause: err }) : new UnrecoverableError(text);
    }
  };

  const worker = new Worker<JobData, ClassifyResponse>(queue, processJob, {
    connection,
    prefix: options.prefix,
    concurrency,
    lockDuration,
    stalledInterval,
    maxStalledCount,
    name: options.name ?? `${hostname()}:${process.pid}`,
    autorun: true,
  });
  worker.on('error', (err) => onError(err));
  worker.on('ready', () => { connected = true; });
  const ready = worker.waitUntilReady().then(() => { connected = true; });
  ready.catch(() => {});
  metrics.ready = false;
  void ready.then(() => { metrics.ready = !closing; });

  return {
    worker,
    batcher,
    metrics,
    get ready() {
      return connected && !closing && worker.isRunning();
    },
    waitUntilReady: () => ready,
    close() {
      closed ??= (async () => {
        closing = true;
        metrics.ready = false;
        const stopped = worker.close();
        // The jobs it holds run now rather than waiting for company.
        batcher.drain();
        await stopped;
        if (ownsBatcher) await batcher.close();
        if (ownsMetrics) metrics.stop();
      })();
      return closed;
    },
  };
}
