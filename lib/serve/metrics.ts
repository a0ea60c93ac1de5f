/**
 * Server metrics in the Prometheus text exposition format (version 0.0.4):
 * request counts, latency, batch sizes, queueing delay, the keep rate in use,
 * event-loop delay and resident memory.
 */
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import type { Batcher, BatchEvent } from './batcher';

type Labels = Record<string, string>;

function labelText(labels: Labels): string {
  const parts = Object.entries(labels).map(([k, v]) => `${k}="${v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`);
  return parts.length ? `{${parts.join(',')}}` : '';
}

const num = (v: number): string => (Number.isFinite(v) ? String(v) : v > 0 ? '+Inf' : v < 0 ? '-Inf' : 'NaN');

class Counter {
  #values = new Map<string, { labels: Labels; value: number }>();
  constructor(readonly name: string, readonly help: string) {}
  inc(labels: Labels = {}, by = 1): void {
    const key = labelText(labels);
    const e = this.#values.get(key);
    if (e) e.value += by;
    else this.#values.set(key, { labels, value: by });
  }
  render(): string[] {
    const out = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} counter`];
    for (const e of this.#values.values()) out.push(`${this.name}${labelText(e.labels)} ${num(e.value)}`);
    return out;
  }
}

class Gauge {
  constructor(readonly name: string, readonly help: string, readonly read: () => number) {}
  render(): string[] {
    return [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} gauge`, `${this.name} ${num(this.read())}`];
  }
}

export class Histogram {
  readonly counts: number[];
  sum = 0;
  count = 0;
  constructor(readonly name: string, readonly help: string, readonly buckets: readonly number[]) {
    this.counts = new Array<number>(buckets.length).fill(0);
  }
  observe(v: number, times = 1): void {
    for (let i = 0; i < this.buckets.length; i++) if (v <= this.buckets[i]!) this.counts[i]! += times;
    this.sum += v * times;
    this.count += times;
  }
  render(): string[] {
    const out = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} histogram`];
    this.buckets.forEach((b, i) => out.push(`${this.name}_bucket{le="${num(b)}"} ${this.counts[i]}`));
    out.push(`${this.name}_bucket{le="+Inf"} ${this.count}`, `${this.name}_sum ${num(this.sum)}`, `${this.name}_count ${this.count}`);
    return out;
  }
}

const SECONDS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const LOOP_SECONDS = [0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1];
const BATCH_SIZES = [1, 2, 4, 8, 16, 32, 64, 128, 256];
// monitorEventLoopDelay samples every 10 ms; its windows are folded into the histogram once a second.
const LOOP_RESOLUTION_MS = 10;
const LOOP_FOLD_MS = 1000;

export class ServerMetrics {
  readonly requests = new Counter('evit_http_requests_total', 'HTTP requests to /v1/classify, by status code.');
  readonly images = new Counter('evit_images_total', 'Images classified.');
  readonly batches = new Counter('evit_batches_total', 'Native forward calls, by keep rate.');
  readonly keepChanges = new Counter('evit_keep_rate_changes_total', 'Steps of the adaptive keep-rate policy, by direction.');
  readonly latency = new Histogram('evit_http_request_duration_seconds', 'Time from request to response for /v1/classify.', SECONDS);
  readonly queueDelay = new Histogram('evit_queue_delay_seconds', 'Time a request waited in the batch queue.', SECONDS);
  readonly batchSize = new Histogram('evit_batch_size', 'Images per native forward call.', BATCH_SIZES);
  readonly inference = new Histogram('evit_batch_duration_seconds', 'Duration of one native forward call.', SECONDS);
  readonly loopDelay = new Histogram('evit_event_loop_delay_seconds', `Event-loop delay, sampled every ${LOOP_RESOLUTION_MS} ms.`, LOOP_SECONDS);
  readonly #gauges: Gauge[];
  #monitor: IntervalHistogram | null = null;
  #fold: NodeJS.Timeout | null = null;
  #detach: Array<() => void> = [];

  constructor(batcher: Batcher) {
    this.#gauges = [
      new Gauge('evit_keep_rate', 'Keep rate a request without its own would run with now (0 when the model runs explicit keep counts).', () => batcher.keepRate ?? 0),
      new Gauge('evit_queue_depth', 'Requests waiting in the batch queue.', () => batcher.queued),
      new Gauge('evit_batches_in_flight', 'Native forward calls running.', () => batcher.inFlight),
      new Gauge('process_resident_memory_bytes', 'Resident set size of the server process.', () => process.memoryUsage.rss()),
    ];
    const onBatch = (e: BatchEvent): void => {
      this.batches.inc({ keep_rate: String(e.keepRate ?? 'counts') });
      this.batchSize.observe(e.images);
      this.inference.observe(e.runMs / 1000);
      for (const q of e.queueMs) this.queueDelay.observe(q / 1000);
      if (!e.error) this.images.inc({}, e.images);
    };
    batcher.on('batch', onBatch);
    this.#detach.push(() => batcher.off('batch', onBatch));
    if (batcher.policy) {
      this.#detach.push(batcher.policy.onChange((c) => this.keepChanges.inc({ direction: c.to < c.from ? 'down' : 'up' })));
    }
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
      const inBucket = Math.max(0, atOrBelow - prev);
      // Observe at the bucket's bound: lands in this bucket and every wider one.
      if (inBucket > 0) this.loopDelay.observe(bound, inBucket);
      prev = Math.max(prev, atOrBelow);
    }
    if (n > prev) this.loopDelay.observe(m.max / 1e9 - LOOP_RESOLUTION_MS / 1000, n - prev);
    m.reset();
  }

  observeRequest(status: number, seconds: number): void {
    this.requests.inc({ code: String(status) });
    this.latency.observe(seconds);
  }

  render(): string {
    const blocks = [
      this.requests.render(), this.latency.render(), this.images.render(), this.batches.render(),
      this.batchSize.render(), this.queueDelay.render(), this.inference.render(), this.keepChanges.render(),
      this.loopDelay.render(), ...this.#gauges.map((g) => g.render()),
    ];
    return blocks.map((b) => b.join('\n')).join('\n') + '\n';
  }
}
