/**
 * The server and queue entry points as the package exports them: fastify and bullmq
 * are loaded on first use, so `require('evit')` stays light for programs that never
 * serve or queue.
 */
import type { FastifyInstance, FastifyPluginAsync } from 'fastify';
import type { Job, Queue, QueueEvents } from 'bullmq';
import type { EvitPluginOptions, ServeOptions } from './server';
import type { EvitWorker, WorkerOptions } from './queueWorker';
import type { EnqueueOptions, JobImage, JobQueue, JobQueueOptions, WaitOptions } from './enqueue';
import type { JobData } from './jobInput';
import type { ClassifyResponse } from './response';
import type { Model } from '../model';

type ServerModule = typeof import('./server');
let loaded: ServerModule | null = null;
const load = (): ServerModule => (loaded ??= require('./server') as ServerModule);

type WorkerModule = typeof import('./queueWorker');
let workerModule: WorkerModule | null = null;
const loadWorker = (): WorkerModule => (workerModule ??= require('./queueWorker') as WorkerModule);

type ProducerModule = typeof import('./enqueue');
let producerModule: ProducerModule | null = null;
const loadProducer = (): ProducerModule => (producerModule ??= require('./enqueue') as ProducerModule);

/** A fastify instance with the evit plugin mounted at the root; call `listen()` on it. */
export function createServer(options: ServeOptions): FastifyInstance {
  return load().createServer(options);
}

/** The fastify plugin: POST /v1/classify, the v2 inference protocol, GET /healthz, GET /metrics. */
export const evitPlugin: FastifyPluginAsync<EvitPluginOptions> = (app, options) => load().evitPlugin(app, options);

/** A BullMQ worker that classifies the jobs of a queue through a Batcher. */
export function createWorker(model: Model, options: WorkerOptions): EvitWorker {
  return loadWorker().createWorker(model, options);
}

/** Adds a classification job to a BullMQ Queue. */
export function enqueue(queue: Queue, image: JobImage, options?: EnqueueOptions): Promise<Job<JobData, ClassifyResponse>> {
  return loadProducer().enqueue(queue, image, options);
}

/** The result of a job (the JSON of POST /v1/classify), or a JobFailedError with the worker's code. */
export function waitForResult(job: Job, events: QueueEvents, options?: WaitOptions): Promise<ClassifyResponse> {
  return loadProducer().waitForResult(job, events, options);
}

/** A Queue and its QueueEvents for a producer: enqueue, wait for results, or classify (both). */
export function openJobQueue(options: JobQueueOptions): JobQueue {
  return loadProducer().openJobQueue(options);
}
