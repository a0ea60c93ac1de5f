/** `evit serve`: an HTTP classification server with dynamic batching. */
import { availableParallelism } from 'node:os';
import { parseArgs } from 'node:util';
import sharp from 'sharp';
import { createServer } from '../serve/lazy';
import { AdaptiveKeepPolicy } from '../serve/adaptiveKeep';
import { Batcher } from '../serve/batcher';
import { DEFAULT_LARGE_IMAGE_PIXELS } from '../serve/decodeLanes';
import { DEFAULT_BODY_LIMIT, DEFAULT_MAX_PIXELS } from '../serve/plugin';
import { nativeLimits } from '../native';
import { intUpTo, positiveInt } from '../validate';
import { UsageError, byteCount, num } from './args';
import { MODEL_OPTIONS, loadModelFromArgs, modelNameOf, numList } from './modelOptions';

export const usage = `  evit serve [--weights FILE] [options]             serve /v1/classify and the v2 inference protocol over HTTP`;

export const help = `serve options:
  --host ADDR           address to listen on (default 127.0.0.1, loopback only)
  --port N              port (default 8080; 0 picks a free one)
  --max-batch N         most images per forward pass (default 32)
  --max-wait-ms MS      longest a request waits for others to batch with (default 2)
  --max-queue N         requests waiting before new ones get 429 (default 256)
  --in-flight N         forward passes running at once (default 1)
  --adaptive            lower the keep rate under load (0.9 -> 0.7 -> 0.5), raise it when load falls
  --adaptive-rates LIST keep rates the adaptive policy steps through (default 0.9,0.7,0.5)
  --target-ms MS        queueing delay above which the policy steps down (default 50)
  --body-limit BYTES    largest request body; k/m suffixes allowed (default ${DEFAULT_BODY_LIMIT / 1024 / 1024}m)
  --max-pixels N        largest image, width x height, read from its header (default ${DEFAULT_MAX_PIXELS})
  --large-image-pixels N  requests with more pixels than this in all decode in the large lane (default ${DEFAULT_LARGE_IMAGE_PIXELS})
  --large-decodes N     requests with large images decoding at once (default 1); small ones never wait for them
  --request-timeout-ms MS  time to receive a whole request; slower clients get 408 (default 30000)
  --threads N           CPU threads of the forward pass (default: one fewer than the cores, at least 1)
  --model-name NAME     the model's name in /v2/models/NAME (default: the checkpoint's file name)
  --log                 log every request (JSON lines on stdout)
  Model options as for classify: --weights --card --arch --heads --num-heads --keep-rate --drop-loc
  --fuse/--no-fuse --img-size --labels --top

It listens before the model has loaded: /v2/health/live answers at once, /v2/health/ready once the model
is loaded (and no longer once shutdown begins). SIGINT or SIGTERM stops accepting connections, finishes every
accepted request, then exits.`;

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    allowNegative: true,
    options: {
      host: { type: 'string', default: '127.0.0.1' },
      port: { type: 'string', default: '8080' },
      'max-batch': { type: 'string' },
      'max-wait-ms': { type: 'string' },
      'max-queue': { type: 'string' },
      'in-flight': { type: 'string' },
      adaptive: { type: 'boolean', default: false },
      'adaptive-rates': { type: 'string' },
      'target-ms': { type: 'string' },
      'body-limit': { type: 'string' },
      'max-pixels': { type: 'string' },
      'large-image-pixels': { type: 'string' },
      'large-decodes': { type: 'string' },
      'request-timeout-ms': { type: 'string' },
      log: { type: 'boolean', default: false },
      'model-name': { type: 'string' },
      ...MODEL_OPTIONS,
      top: { type: 'string' },
    },
  });
  if (positionals.length) throw new UsageError(`serve takes no positional arguments, got ${positionals.join(' ')}`);
  if (values.weights === '') throw new UsageError('--weights needs a file');
  const adaptiveRates = numList('adaptive-rates', values['adaptive-rates']);
  const targetMs = num('target-ms', values['target-ms']);
  if (!values.adaptive && (adaptiveRates !== undefined || targetMs !== undefined))
    throw new UsageError('--adaptive-rates and --target-ms need --adaptive');
  const port = num('port', values.port)!;
  const maxBatch = num('max-batch', values['max-batch']);
  // Checked against what one native call takes before anything listens or loads.
  if (maxBatch !== undefined) intUpTo('--max-batch', maxBatch, nativeLimits().maxBatch);
  const batch = {
    maxBatchSize: maxBatch,
    maxWaitMs: num('max-wait-ms', values['max-wait-ms']),
    maxQueue: num('max-queue', values['max-queue']),
    maxInFlight: num('in-flight', values['in-flight']),
    // Made now, so bad policy options fail before the model loads.
    adaptiveKeep: values.adaptive ? new AdaptiveKeepPolicy({ rates: adaptiveRates, targetMs }) : false as const,
  };
  // Checked now, so a bad value fails before the model loads.
  const lanes = {
    largeImagePixels: positiveInt('--large-image-pixels', num('large-image-pixels', values['large-image-pixels'])),
    largeDecodes: positiveInt('--large-decodes', num('large-decodes', values['large-decodes'])),
  };
  const requestTimeoutMs = positiveInt('--request-timeout-ms', num('request-timeout-ms', values['request-timeout-ms']));
  // libvips' operation cache only pays off when the same image is processed twice; uploads are all
  // different, so for a long-running server it is just memory that grows up to its 50 MB cap.
  sharp.cache(false);
  // One core is left to the event loop, HTTP parsing and image decoding, so they never wait on a pass.
  const loading = loadModelFromArgs(values, { threads: Math.max(1, availableParallelism() - 1) });
  const batcher = loading.then((m) => new Batcher(m, batch));
  // The server listens while the model loads; its readiness says when it can serve.
  const app = createServer({
    batcher,
    logger: values.log,
    bodyLimit: byteCount('body-limit', values['body-limit']),
    maxPixels: num('max-pixels', values['max-pixels']),
    ...lanes,
    requestTimeoutMs,
    top: num('top', values.top),
    modelName: values['model-name'] ?? modelNameOf(values.weights),
  });
  let b: Batcher;
  try {
    const address = await app.listen({ host: values.host, port });
    process.stderr.write(`evit: listening on ${address}, loading the model…\n`);
    b = await batcher;
    const policy = values.adaptive ? `adaptive keep rate ${(adaptiveRates ?? [0.9, 0.7, 0.5]).join(' -> ')}` : `keep rate ${b.model.schedule.keepRate ?? 'from keep counts'}`;
    process.stderr.write(`evit: serving on ${address} (${b.model.backend}, ${policy})\n`);
  } catch (err) {
    await app.close().catch(() => {});
    (await loading.catch(() => null))?.dispose();
    throw err;
  }

  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (signal: NodeJS.Signals): void => {
      if (stopping) {
        process.stderr.write(`evit: ${signal} again, exiting without waiting\n`);
        process.exit(1);
      }
      stopping = true;
      process.stderr.write(`evit: ${signal}: finishing accepted requests…\n`);
      // Queued requests run now rather than after --max-wait-ms.
      b.drain();
      app.close().then(() => b.close()).then(
        () => {
          process.off('SIGINT', stop);
          process.off('SIGTERM', stop);
          b.model.dispose();
          process.stderr.write('evit: stopped\n');
          resolve(0);
        },
        (err: Error) => {
          process.stderr.write(`evit: shutdown failed: ${err.message}\n`);
          resolve(1);
        },
      );
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
}
