/**
 * Serving metrics on prom-client, for `evit serve` and `evit worker`: request and
 * job latency, batch sizes, queueing delay, the keep rate in use, passes in
 * flight, rejections by error code, event-loop delay, plus prom-client's process
 * and Node.js metrics. Every label takes its values from a fixed set, so no
 * client input (a keep rate, a status, an error code) can add series without bound.
 */
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Batcher, BatchEvent } from './batcher';
import type { DecodeLanes } from './decodeLanes';

const SECONDS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
// Jobs wait in Redis as well as in the batcher: their latency runs longer than a request's.
const JOB_SECONDS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];
const LOOP_SECONDS = [0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1];
const BATCH_SIZES = [1, 2, 4, 8, 16, 32, 64, 128, 256];
// monitorEventLoopDelay samples every 10 ms; its windows are folded into the histogram once a second.
const LOOP_RESOLUTION_MS = 10;
const LOOP_FOLD_MS = 1000;

/** The routes whose requests are counted. */
export type MetricsRoute = 'classify' | 'infer';
const ROUTES: readonly MetricsRoute[] = ['classify', 'infer'];

/** Statuses the server answers with; anything else is counted as "other". */
const STATUSES = new Set([200, 400, 404, 408, 413, 415, 429, 499, 500, 503]);

/** Error codes the server and the worker report; anything else is counted as EVIT_OTHER. */
export const ERROR_CODES: readonly string[] = [
  'EVIT_BAD_INPUT', 'EVIT_BAD_OPTIONS', 'EVIT_BAD_REQUEST', 'EVIT_BODY_TOO_LARGE', 'EVIT_IMAGE_TOO_LARGE',
  'EVIT_UNSUPPORTED_MEDIA_TYPE', 'EVIT_NOT_FOUND', 'EVIT_OVERLOADED', 'EVIT_CLOSED', 'EVIT_ABORTED',
  'EVIT_NOT_READY', 'EVIT_FETCH_FAILED', 'EVIT_NATIVE', 'EVIT_DISPOSED', 'EVIT_INTERNAL',
];
const CODE_SET = new Set(ERROR_CODES);

export const statusLabel = (status: number): string => (STATUSES.has(status) ? String(status) : 'other');
export const codeLabel = (code: string | undefined): string => (code !== undefined && CODE_SET.has(code) ? code : 'EVIT_OTHER');

// Keep rates on this grid are labelled as they are; others (a client's 0.73) share "other".
const KEEP_GRID = 20;

/**
 * The keep_rate label of a batch: the rate itself when it is a multiple of 0.05 or one
 * the server was configured with, else "other"; "counts" for explicit keep counts.
 */
export function keepRateLabel(rate: number | null, configured: ReadonlySet<number> = new Set()): string {
  if (rate === null) return 'counts';
  if (configured.has(rate)) return String(rate);
  const onGrid = Math.round(rate * KEEP_GRID);
  if (onGrid >= 1 && onGrid <= KEEP_GRID && Math.abs(rate * KEEP_GRID - onGrid) < 1e-9) return String(onGrid / KEEP_GRID);
  return 'other';
}

export type JobOutcome = 'completed' | 'failed' | 'retry';

let processRegistry: Registry | null = null;
/** prom-client's process and Node.js metrics, collected once per process however many servers run in it. */
function processMetrics(): Registry {
  if (!processRegistry) {
    processRegistry = new Registry();
    collectDefaultMetrics({ register: processRegistry });
  }
  return processRegistry;
}

export interface ServingMetricsOptions {
  /** Register the evit metrics here (e.g. your application's registry). Default: a registry of their own. */
  registry?: Registry;
  /** Also expose prom-client's process_* and nodejs_* metrics. Default true with a registry of their own, false with yours. */
  processMetrics?: boolean;
}

export class ServingMetrics {
  readonly registry: Registry;
  readonly #withProcess: boolean;
  readonly requests: Counter<'route' | 'code'>;
  readonly latency: Histogram<'route'>;
  readonly rejected: Counter<'route' | 'code'>;
  readonly jobs: Counter<'outcome'>;
  readonly jobLatency: Histogram<'outcome'>;
  readonly rejectedJobs: Counter<'code'>;
  readonly images: Counter;
  readonly batches: Counter<'keep_rate'>;
  readonly keepChanges: Counter<'direction'>;
  readonly batchSize: Histogram;
  readonly queueDelay: Histogram;
  readonly inference: Histogram;
  readonly loopDelay: Histogram;
  #batcher: Batcher | null = null;
  #lanes: DecodeLanes | null = null;
  #ready = false;
  #activeJobs = 0;
  #configuredRates = new Set<number>();
  #monitor: IntervalHistogram | null = null;
  #fold: NodeJS.Timeout | null = null;
  #detach: Array<() => void> = [];

  constructor(options: ServingMetricsOptions = {}) {
    this.registry = options.registry ?? new Registry();
    this.#withProcess = options.processMetrics ?? options.registry === undefined;
    const registers = [this.registry];
    const self = this;
    this.requests = new Counter({ name: 'evit_http_requests_total', help: 'HTTP requests to /v1/classify and /v2/models/*/infer, by route and status code.', labelNames: ['route', 'code'], registers });
    this.latency = new Histogram({ name: 'evit_http_request_duration_seconds', help: 'Time from request to response, by route.', labelNames: ['route'], buckets: SECONDS, registers });
    this.rejected = new Counter({ name: 'evit_rejected_requests_total', help: 'HTTP requests answered with an error, by route and error code.', labelNames: ['route', 'code'], registers });
    this.jobs = new Counter({ name: 'evit_jobs_total', help: 'Queue jobs finished by this worker: completed, failed for good, or failed to be retried.', labelNames: ['outcome'], registers });
    this.jobLatency = new Histogram({ name: 'evit_job_duration_seconds', help: 'Time from a job being enqueued to this worker finishing it, by outcome.', labelNames: ['outcome'], buckets: JOB_SECONDS, registers });
    this.rejectedJobs = new Counter({ name: 'evit_rejected_jobs_total', help: 'Queue jobs that failed, by error code.', labelNames: ['code'], registers });
    this.images = new Counter({ name: 'evit_images_total', help: 'Images classified.', registers });
    this.batches = new Counter({ name: 'evit_batches_total', help: 'Native forward calls, by keep rate (multiples of 0.05 and configured rates; others are "other").', labelNames: ['keep_rate'], registers });
    this.keepChanges = new Counter({ name: 'evit_keep_rate_changes_total', help: 'Steps of the adaptive keep-rate policy, by direction.', labelNames: ['direction'], registers });
    this.batchSize = new Histogram({ name: 'evit_batch_size', help: 'Images per native forward call.', buckets: BATCH_SIZES, registers });
    this.queueDelay = new Histogram({ name: 'evit_queue_delay_seconds', help: 'Time a request waited in the batch queue.', buckets: SECONDS, registers });
    this.inference = new Histogram({ name: 'evit_batch_duration_seconds', help: 'Duration of one native forward call.', buckets: SECONDS, registers });
    this.loopDelay = new Histogram({ name: 'evit_event_loop_delay_seconds', help: `Event-loop delay, sampled every ${LOOP_RESOLUTION_MS} ms.`, buckets: LOOP_SECONDS, registers });
    new Gauge({ name: 'evit_ready', help: '1 when the model is loaded and work is accepted, else 0 (loading or draining).', registers, collect() { this.set(self.#ready ? 1 : 0); } });
    new Gauge({ name: 'evit_keep_rate', help: 'Keep rate a request without its own would run with now (0 when the model runs explicit keep counts or is not loaded).', registers, collect() { this.set(self.#batcher?.keepRate ?? 0); } });
    new Gauge({ name: 'evit_queue_depth', help: 'Requests waiting in the batch queue.', registers, collect() { this.set(self.#batcher?.queued ?? 0); } });
    new Gauge({ name: 'evit_batches_in_flight', help: 'Native forward calls running.', registers, collect() { this.set(self.#batcher?.inFlight ?? 0); } });
    new Gauge({ name: 'evit_large_decodes', help: 'Requests with large images decoding now (at most the large lane\'s width).', registers, collect() { this.set(self.#lanes?.largeRunning ?? 0); } });
    new Gauge({ name: 'evit_large_decodes_waiting', help: 'Requests with large images waiting for the large lane.', registers, collect() { this.set(self.#lanes?.largeWaiting ?? 0); } });
    new Gauge({ name: 'evit_jobs_active', help: 'Queue jobs this worker holds (locked in Redis, in the batch queue or running).', registers, collect() { this.set(self.#activeJobs); } });
  }

  /** Counts the batches of `batcher` and reads its queue, keep rate and passes in flight. */
  attach(batcher: Batcher): void {
    this.#batcher = batcher;
    this.#configuredRates = new Set([batcher.model.schedule.keepRate, ...(batcher.policy?.rates ?? [])].filter((r): r is number => r !== null));
    const onBatch = (e: BatchEvent): void => {
      this.batches.inc({ keep_rate: keepRateLabel(e.keepRate, this.#configuredRates) });
      this.batchSize.observe(e.images);
      this.inference.observe(e.runMs / 1000);
      for (const q of e.queueMs) this.queueDelay.observe(q / 1000);
      if (!e.error) this.images.inc(e.images);
    };
    batcher.on('batch', onBatch);
    this.#detach.push(() => batcher.off('batch', onBatch));
    if (batcher.policy)
      this.#detach.push(batcher.policy.onChange((c) => this.keepChanges.inc({ direction: c.to < c.from ? 'down' : 'up' })));
  }

  /** Reads the large-image lane's running and waiting requests. */
  attachLanes(lanes: DecodeLanes): void {
    this.#lanes = lanes;
  }

  set ready(v: boolean) {
    this.#ready = v;
  }

  /** Starts sampling the event loop. */
  start(): void {
    if (this.#monitor) return;
    this.#monitor = monitorEventLoopDelay({ resolution: LOOP_RESOLUTION_MS });
    this.#monitor.enable();
    this.#fold = setInterval(() => this.#foldLoopDelay(), LOOP_FOLD_MS);
    this.#fold.unref();
  }

  stop(): void {
    if (this.#fold) clearInterval(this.#fold);
    this.#fold = null;
    this.#monitor?.disable();
    this.#monitor = null;
    for (const d of this.#detach.splice(0)) d();
  }

  /**
   * Moves the samples gathered since the last fold into the histogram. The monitor keeps
   * percentiles, not samples: the count at or below each bucket bound is read off its
   * percentile curve. It reports the full timer period; the delay is what exceeds it.
   */
  #foldLoopDelay(): void {
    const m = this.#monitor;
    if (!m || m.count === 0) return;
    const n = m.count;
    const points = [...m.percentiles.entries()].sort((a, b) => a[0] - b[0]);
    let prev = 0;
    for (const bound of LOOP_SECONDS) {
      const limitNs = (bound * 1000 + LOOP_RESOLUTION_MS) * 1e6;
      let pct = 0;
      for (const [p, v] of points) if (v <= limitNs) pct = p;
      const atOrBelow = Math.round((n * pct) / 100);
      // Observed at the bucket's bound: lands in this bucket and every wider one.
      for (let i = prev; i < atOrBelow; i++) this.loopDelay.observe(bound);
      prev = Math.max(prev, atOrBelow);
    }
    const beyond = Math.max(0, m.max / 1e9 - LOOP_RESOLUTION_MS / 1000);
    for (let i = prev; i < n; i++) this.loopDelay.observe(beyond);
    m.reset();
  }

  /** One answered HTTP request; `code` is the error code of an error response. */
  observeRequest(route: MetricsRoute, status: number, seconds: number, code?: string): void {
    if (!ROUTES.includes(route)) return;
    this.requests.inc({ route, code: statusLabel(status) });
    this.latency.observe({ route }, seconds);
    if (status >= 400) this.rejected.inc({ route, code: codeLabel(code) });
  }

  /** Jobs this worker holds now. */
  get activeJobs(): number {
    return this.#activeJobs;
  }

  jobStarted(): void {
    this.#activeJobs++;
  }

  /** One job this worker finished; `seconds` since it was enqueued, `code` for a failure. */
  jobFinished(outcome: JobOutcome, seconds: number, code?: string): void {
    this.#activeJobs--;
    this.jobs.inc({ outcome });
    this.jobLatency.observe({ outcome }, Math.max(0, seconds));
    if (outcome !== 'completed') this.rejectedJobs.inc({ code: codeLabel(code) });
  }

  readonly contentType = 'text/plain; version=0.0.4; charset=utf-8';

  /** The exposition text: the evit metrics, then (when enabled) the process's. */
  async render(): Promise<string> {
    const own = await this.registry.metrics();
    if (!this.#withProcess) return own;
    return `${own.endsWith('\n') ? own : `${own}\n`}${await processMetrics().metrics()}`;
  }
}
