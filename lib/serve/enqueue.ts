/**
 * The producer side of the queue: `enqueue(queue, image, options)` adds a
 * classification job in the form the worker reads, and `waitForResult(job, events)`
 * resolves with the job's result JSON (the same as POST /v1/classify answers) or
 * rejects with a JobFailedError carrying the worker's error code. `openJobQueue`
 * bundles a Queue and its QueueEvents for programs that do not manage their own.
 */
import { Queue, QueueEvents, type Job, type JobsOptions } from 'bullmq';
import { InputError, JobFailedError, OptionsError, TimeoutError } from '../errors';
import { connectionOptions, queueName, type QueueConnection } from './connection';
import type { JobData } from './jobInput';
import type { ClassifyResponse } from './response';

/** An image as a job carries it: bytes, a path or URL the worker reads, or a preprocessed `.npy` tensor. */
export type JobImage = Buffer | string | { path: string } | { url: string } | { npy: Buffer };

export interface EnqueueOptions {
  /** Classes reported per image. Default: the worker's (5). */
  top?: number;
  /** Keep rate for this job. Default: the worker's. */
  keepRate?: number;
  /** Also return the kept-token origins per dropping block. */
  kept?: boolean;
  /** BullMQ job name. Default "classify". */
  name?: string;
  /**
   * BullMQ job options (jobId, priority, attempts, backoff, removeOnComplete...). Defaults: 3 attempts
   * with exponential backoff from 1 s (bad jobs are never retried), completed jobs kept an hour
   * (at most 10 000), failed ones a day.
   */
  job?: JobsOptions;
}

export const DEFAULT_JOB_OPTIONS: JobsOptions = {
  attempts: 3,
  backoff: { type: 'exponential', delay: 1000 },
  removeOnComplete: { age: 3600, count: 10_000 },
  removeOnFail: { age: 24 * 3600 },
};

/** The job data for `image` and `options`, as the worker reads it. */
export function jobData(image: JobImage, options: EnqueueOptions = {}): JobData {
  const data: JobData = {};
  if (Buffer.isBuffer(image)) {
    if (image.length === 0) throw new InputError('the image is empty');
    data.image = image.toString('base64');
  } else if (typeof image === 'string') {
    if (image === '') throw new InputError('the image path or URL is empty');
    if (/^https?:\/\//i.test(image)) data.url = image;
    else data.path = image;
  } else if (image && typeof image === 'object' && typeof (image as { path?: unknown }).path === 'string') {
    data.path = (image as { path: string }).path;
  } else if (image && typeof image === 'object' && typeof (image as { url?: unknown }).url === 'string') {
    data.url = (image as { url: string }).url;
  } else if (image && typeof image === 'object' && Buffer.isBuffer((image as { npy?: unknown }).npy)) {
    data.npy = (image as { npy: Buffer }).npy.toString('base64');
  } else {
    throw new InputError('the image must be a Buffer, a path or URL string, or {path}, {url} or {npy: Buffer}');
  }
  if (options.top !== undefined) {
    if (!Number.isSafeInteger(options.top) || options.top < 1) throw new OptionsError(`top must be a positive integer, got ${String(options.top)}`);
    data.top = options.top;
  }
  if (options.keepRate !== undefined) {
    if (typeof options.keepRate !== 'number' || !(options.keepRate > 0 && options.keepRate <= 1))
      throw new OptionsError(`keepRate must be a number in (0, 1], got ${String(options.keepRate)}`);
    data.keepRate = options.keepRate;
  }
  if (options.kept !== undefined) data.kept = options.kept === true;
  return data;
}

/** Adds a classification job to `queue` (a BullMQ Queue); resolves with the job once Redis has it. */
export function enqueue(queue: Queue, image: JobImage, options: EnqueueOptions = {}): Promise<Job<JobData, ClassifyResponse>> {
  try {
    if (options === null || typeof options !== 'object') throw new OptionsError('enqueue options must be an object');
    const data = jobData(image, options);
    return queue.add(options.name ?? 'classify', data, { ...DEFAULT_JOB_OPTIONS, ...options.job }) as Promise<Job<JobData, ClassifyResponse>>;
  } catch (err) {
    return Promise.reject(err as Error);
  }
}

export interface WaitOptions {
  /** Give up waiting after this long, ms (TimeoutError; the job may still finish). Default: wait as long as it takes. */
  timeoutMs?: number;
}

/** Reads the worker's "CODE: message" failure back into a typed error. */
export function failureOf(reason: string, jobId: string | undefined): JobFailedError {
  const m = /^(EVIT_[A-Z_]+): ([\s\S]*)$/.exec(reason);
  return m ? new JobFailedError(m[1]!, m[2]!, jobId) : new JobFailedError('EVIT_JOB_FAILED', reason, jobId);
}

/**
 * Waits for `job` to finish, listening on `events` (a QueueEvents of the job's queue): its result,
 * or a JobFailedError whose `code` is the worker's (EVIT_BAD_INPUT...), or TimeoutError.
 */
export async function waitForResult(job: Job, events: QueueEvents, options: WaitOptions = {}): Promise<ClassifyResponse> {
  const { timeoutMs } = options;
  if (timeoutMs !== undefined && (!Number.isFinite(timeoutMs) || timeoutMs <= 0))
    throw new OptionsError(`timeoutMs must be a positive number, got ${String(timeoutMs)}`);
  // Results are read from the events stream from the moment it is connected.
  await events.waitUntilReady();
  // BullMQ adds a listener to the job's queue for every wait: many waits at once are expected here.
  const queue = (job as unknown as { queue?: { getMaxListeners?(): number; setMaxListeners?(n: number): void } }).queue;
  if (queue?.getMaxListeners && queue.getMaxListeners() !== 0) queue.setMaxListeners?.(0);
  try {
    return (await job.waitUntilFinished(events, timeoutMs)) as ClassifyResponse;
  } catch (err) {
    const message = (err as Error).message;
    if (/^Job wait .* timed out before finishing/.test(message))
      throw new TimeoutError(`job ${job.id} did not finish within ${timeoutMs} ms`, { cause: err });
    throw failureOf(message, job.id);
  }
}

export interface JobQueueOptions {
  connection: QueueConnection;
  queue: string;
  /** BullMQ key prefix. Default "bull". */
  prefix?: string;
}

/** A Queue and its QueueEvents, for producers: enqueue, wait, or both. */
export class JobQueue {
  readonly queue: Queue;
  readonly events: QueueEvents;

  constructor(options: JobQueueOptions) {
    if (options === null || typeof options !== 'object') throw new OptionsError('JobQueue options must be an object');
    const name = queueName(options.queue);
    const connection = connectionOptions(options.connection);
    this.queue = new Queue(name, { connection, prefix: options.prefix });
    this.events = new QueueEvents(name, { connection, prefix: options.prefix });
  }

  /** Resolves once both connections are up (results are only seen from then on: call it before enqueueing). */
  async waitUntilReady(): Promise<void> {
    await Promise.all([this.queue.waitUntilReady(), this.events.waitUntilReady()]);
  }

  enqueue(image: JobImage, options?: EnqueueOptions): Promise<Job<JobData, ClassifyResponse>> {
    return enqueue(this.queue, image, options);
  }

  result(job: Job, options?: WaitOptions): Promise<ClassifyResponse> {
    return waitForResult(job, this.events, options);
  }

  /** Enqueues and waits: the queue's answer to one image. */
  async classify(image: JobImage, options: EnqueueOptions & WaitOptions = {}): Promise<ClassifyResponse> {
    await this.waitUntilReady();
    return this.result(await this.enqueue(image, options), options);
  }

  async close(): Promise<void> {
    await Promise.all([this.events.close(), this.queue.close()]);
  }
}

export function openJobQueue(options: JobQueueOptions): JobQueue {
  return new JobQueue(options);
}
