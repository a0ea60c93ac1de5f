/** `evit worker`: classify the jobs of a BullMQ queue on Redis, batching them like `evit serve` batches requests. */
import { availableParallelism } from 'node:os';
import { parseArgs } from 'node:util';
import sharp from 'sharp';
import { AdaptiveKeepPolicy } from '../serve/adaptiveKeep';
import { createWorker } from '../serve/lazy';
import { DEFAULT_BODY_LIMIT, DEFAULT_MAX_PIXELS } from '../serve/plugin';
import { DEFAULT_LARGE_IMAGE_PIXELS } from '../serve/decodeLanes';
import { nativeLimits } from '../native';
import { intUpTo, positiveInt } from '../validate';
import { listenStatus, type StatusServer, type StatusSource } from '../serve/statusServer';
import type { EvitWorker } from '../serve/queueWorker';
import { UsageError, byteCount, num } from './args';
import { MODEL_OPTIONS, loadModelFromArgs, numList } from './modelOptions';

export const usage = `  evit worker --queue NAME [--redis URL] [options]  classify the jobs of a BullMQ queue`;

export const help = `worker options:
  --redis URL           Redis to take jobs from (default: $REDIS_URL, else redis://127.0.0.1:6379)
  --queue NAME          the BullMQ queue (required)
  --prefix P            BullMQ key prefix (default bull)
  --concurrency N       jobs held at once, waiting for a batch or running (default twice --max-batch)
  --max-batch N         most images per forward pass (default 32)
  --max-wait-ms MS      longest a job waits for others to batch with (default 2)
  --in-flight N         forward passes running at once (default 1)
  --adaptive, --adaptive-rates LIST, --target-ms MS   the load-adaptive keep rate, as for serve
  --allow-path DIR      jobs may name files under DIR in "path" (repeatable; default: none)
  --allow-url PREFIX    jobs may name URLs starting with PREFIX in "url" (repeatable; default: none)
  --max-bytes BYTES     largest image, inline, file or download; k/m suffixes (default ${DEFAULT_BODY_LIMIT / 1024 / 1024}m)
  --max-pixels N        largest image, width x height, read from its header (default ${DEFAULT_MAX_PIXELS})
  --large-image-pixels N  images with more pixels than this decode in the large lane (default ${DEFAULT_LARGE_IMAGE_PIXELS})
  --large-decodes N     large images decoding at once (default 1); small ones never wait for them
  --fetch-timeout-ms MS time allowed for one download (default 10000)
  --lock-duration-ms MS a job's lock without renewal; a dead worker's jobs are recovered after it (default 30000)
  --stalled-interval-ms MS  how often to look for stalled jobs (default 30000)
  --max-stalled N       times a job may stall before it fails (default 1)
  --name NAME           this worker's name on the jobs it processes (default host:pid)
  --metrics-port N      serve GET /metrics, /v2/health/live and /v2/health/ready on this port (default: off)
  --metrics-host ADDR   address for --metrics-port (default 127.0.0.1)
  --threads N           CPU threads of the forward pass (default: one fewer than the cores, at least 1)
  Model options as for classify: --weights --card --arch --heads --num-heads --keep-rate --drop-loc
  --fuse/--no-fuse --img-size --labels --top

A job's data is {"image": base64} | {"npy": base64} | {"path": FILE} | {"url": URL}, with optional "top",
"keepRate" and "kept"; it completes with the JSON of POST /v1/classify. Bad jobs fail at once with the
HTTP API's error code (EVIT_BAD_INPUT...) and are not retried. SIGINT or SIGTERM stops taking jobs,
finishes the ones held, then exits.`;

/** The URL with its password hidden, for messages. */
function shown(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.href.replace(/\/$/, '');
  } catch {
    return url;
  }
}

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    allowNegative: true,
    options: {
      redis: { type: 'string' },
      queue: { type: 'string' },
      prefix: { type: 'string' },
      concurrency: { type: 'string' },
      'max-batch': { type: 'string' },
      'max-wait-ms': { type: 'string' },
      'in-flight': { type: 'string' },
      adaptive: { type: 'boolean', default: false },
      'adaptive-rates': { type: 'string' },
      'target-ms': { type: 'string' },
      'allow-path': { type: 'string', multiple: true },
      'allow-url': { type: 'string', multiple: true },
      'max-bytes': { type: 'string' },
      'max-pixels': { type: 'string' },
      'large-image-pixels': { type: 'string' },
      'large-decodes': { type: 'string' },
      'fetch-timeout-ms': { type: 'string' },
      'lock-duration-ms': { type: 'string' },
      'stalled-interval-ms': { type: 'string' },
      'max-stalled': { type: 'string' },
      name: { type: 'string' },
      'metrics-port': { type: 'string' },
      'metrics-host': { type: 'string', default: '127.0.0.1' },
      ...MODEL_OPTIONS,
      top: { type: 'string' },
    },
  });
  if (positionals.length) throw new UsageError(`worker takes no positional arguments, got ${positionals.join(' ')}`);
  if (!values.queue) throw new UsageError('worker needs --queue NAME');
  const redis = values.redis ?? process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
  if (!/^rediss?:\/\//.test(redis)) throw new UsageError(`--redis must be a redis:// or rediss:// URL, got ${JSON.stringify(redis)}`);
  const adaptiveRates = numList('adaptive-rates', values['adaptive-rates']);
  const targetMs = num('target-ms', values['target-ms']);
  if (!values.adaptive && (adaptiveRates !== undefined || targetMs !== undefined))
    throw new UsageError('--adaptive-rates and --target-ms need --adaptive');
  const maxBatchSize = num('max-batch', values['max-batch']);
  // Checked against what one native call takes before the model loads or Redis is touched.
  if (maxBatchSize !== undefined) intUpTo('--max-batch', maxBatchSize, nativeLimits().maxBatch);
  const largeImagePixels = positiveInt('--large-image-pixels', num('large-image-pixels', values['large-image-pixels']));
  const largeDecodes = positiveInt('--large-decodes', num('large-decodes', values['large-decodes']));
  const concurrency = num('concurrency', values.concurrency) ?? 2 * (maxBatchSize ?? 32);
  const batch = {
    maxBatchSize,
    maxWaitMs: num('max-wait-ms', values['max-wait-ms']),
    maxInFlight: num('in-flight', values['in-flight']),
    // Every job held must fit the batch queue.
    maxQueue: Math.max(256, concurrency),
    adaptiveKeep: values.adaptive ? new AdaptiveKeepPolicy({ rates: adaptiveRates, targetMs }) : false as const,
  };
  const metricsPort = num('metrics-port', values['metrics-port']);
  sharp.cache(false);

  let worker: EvitWorker | null = null;
  let status: StatusServer | null = null;
  if (metricsPort !== undefined) {
    // Up before the model loads: live at once, ready once jobs are being taken.
    status = await listenStatus(values['metrics-host']!, metricsPort, () => worker as StatusSource | null);
    process.stderr.write(`evit: metrics and health on ${status.url}\n`);
  }
  let model;
  try {
    model = await loadModelFromArgs(values, { threads: Math.max(1, availableParallelism() - 1) });
  } catch (err) {
    await status?.close();
    throw err;
  }
  try {
    worker = createWorker(model, {
      connection: redis,
      queue: values.queue,
      prefix: values.prefix,
      concurrency,
      batch,
      top: num('top', values.top),
      maxPixels: num('max-pixels', values['max-pixels']),
      largeImagePixels,
      largeDecodes,
      maxBytes: byteCount('max-bytes', values['max-bytes']),
      allowPaths: values['allow-path'],
      allowUrls: values['allow-url'],
      fetchTimeoutMs: num('fetch-timeout-ms', values['fetch-timeout-ms']),
      lockDurationMs: num('lock-duration-ms', values['lock-duration-ms']),
      stalledIntervalMs: num('stalled-interval-ms', values['stalled-interval-ms']),
      maxStalledCount: num('max-stalled', values['max-stalled']),
      name: values.name,
      onError: rateLimitedLog(),
    });
  } catch (err) {
    model.dispose();
    await status?.close();
    throw err;
  }
  const w = worker;
  const policy = values.adaptive ? `adaptive keep rate ${(adaptiveRates ?? [0.9, 0.7, 0.5]).join(' -> ')}` : `keep rate ${model.schedule.keepRate ?? 'from keep counts'}`;

  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (signal: NodeJS.Signals): void => {
      if (stopping) {
        process.stderr.write(`evit: ${signal} again, exiting without waiting\n`);
        process.exit(1);
      }
      stopping = true;
      process.stderr.write(`evit: ${signal}: taking no more jobs, finishing the ${w.metrics.activeJobs} held…\n`);
      w.close().then(async () => {
        process.off('SIGINT', stop);
        process.off('SIGTERM', stop);
        await status?.close();
        model.dispose();
        process.stderr.write('evit: stopped\n');
        resolve(0);
      }, (err: Error) => {
        process.stderr.write(`evit: shutdown failed: ${err.message}\n`);
        resolve(1);
      });
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
    w.waitUntilReady().then(
      () => process.stderr.write(`evit: worker taking jobs from queue ${values.queue} on ${shown(redis)} (${model.backend}, ${policy}, concurrency ${concurrency})\n`),
      () => {},
    );
  });
}

/** Connection errors repeat while Redis is away: each message at most every 10 s. */
function rateLimitedLog(): (err: Error) => void {
  const last = new Map<string, number>();
  return (err) => {
    const now = Date.now();
    if ((last.get(err.message) ?? -Infinity) > now - 10_000) return;
    last.set(err.message, now);
    process.stderr.write(`evit: worker: ${err.message}\n`);
  };
}
