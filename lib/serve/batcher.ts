/**
 * Dynamic batching: concurrent forward/classify calls are collected into one
 * native call per batch (up to `maxBatchSize` images, waiting at most
 * `maxWaitMs` for company), with a bounded number of batches in flight and a
 * bounded queue. Each caller gets its own slice of the batch's result.
 *
 * Requests run with a keep rate: their own, else the adaptive policy's current
 * one, else the model's default. Only requests with the same keep rate share a
 * batch (the token counts of a batch are the same for every image in it).
 */
import { EventEmitter } from 'node:events';
import { AdaptiveKeepPolicy, type AdaptiveKeepOptions } from './adaptiveKeep';
import { AbortedError, ClosedError, InputError, OptionsError, OverloadedError } from '../errors';
import { classifications, inputName, type Classification } from '../classification';
import type { KeptTokens, Model } from '../model';
import { nativeLimits } from '../native';
import { preprocessPixels, type DecodeLimits } from '../preprocess';
import {
  checkImageTensor, checkPixelTensor, firstNonFinite, isPixelTensor, type ImageShape, type ImageTensor, type Tensor4D,
} from '../tensor';
import { intUpTo, positiveInt } from '../validate';

export interface BatcherOptions {
  /** Most images in one native call, at most backendInfo().limits.maxBatch. Default 32. */
  maxBatchSize?: number;
  /** How long the first request of a batch may wait for others, in ms. Default 2. */
  maxWaitMs?: number;
  /** Batches running at once. Default 1 (one batch already uses every CPU thread). */
  maxInFlight?: number;
  /** Requests waiting beyond which new ones fail with OverloadedError. Default 256. */
  maxQueue?: number;
  /** Lower the keep rate under load: a policy, its options, or false (default: off). */
  adaptiveKeep?: AdaptiveKeepPolicy | AdaptiveKeepOptions | false;
}

export interface BatchRequestOptions {
  /** Aborting rejects the call with AbortedError; a queued request leaves the queue. */
  signal?: AbortSignal;
  /** Keep rate for this request; overrides the adaptive policy and the model's default. */
  keepRate?: number;
}

export interface BatchClassifyOptions extends BatchRequestOptions {
  /** Classes reported per image. Default 5 (at most the class count). */
  top?: number;
  /** What decoding the images may cost (pixels, aspect ratio, images at once); `signal` also stops the decode. */
  decode?: DecodeLimits;
}

/** How a request was served. */
export interface BatchServing {
  /** The keep rate the batch ran with (null when the model runs explicit keep counts). */
  keepRate: number | null;
  /** Images in the native call that served this request (this request's and others'). */
  batchSize: number;
  /** Time between entering the queue and the batch starting, ms. */
  queueMs: number;
  /** Duration of the native call, ms. */
  runMs: number;
}

export interface BatchedForward extends BatchServing {
  /** [images, classes] row-major, this request's rows only. */
  logits: Float32Array;
  shape: [number, number];
  kept: KeptTokens[];
}

export interface BatchedClassify extends BatchServing {
  results: Classification[];
}

/** Emitted as 'batch' after every native call. */
export interface BatchEvent {
  images: number;
  requests: number;
  keepRate: number | null;
  /** Per request in the batch: ms spent queued. */
  queueMs: number[];
  runMs: number;
  error?: Error;
}

/** uint8 images' statistics; `key` tells batches that may share a native call apart. */
interface Normalize {
  mean: Float32Array;
  std: Float32Array;
  key: string;
}

interface Pending {
  data: Float32Array | Uint8Array;
  /** null: float32 data. Only requests of the same kind and statistics share a batch. */
  normalize: Normalize | null;
  images: number;
  keepRate: number | undefined;
  enqueuedAt: number;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | null;
  settled: boolean;
  resolve: (r: BatchedForward) => void;
  reject: (e: Error) => void;
}

export class Batcher extends EventEmitter {
  readonly model: Model;
  readonly maxBatchSize: number;
  readonly maxWaitMs: number;
  readonly maxInFlight: number;
  readonly maxQueue: number;
  /** The adaptive keep-rate policy, or null when the keep rate is fixed. */
  readonly policy: AdaptiveKeepPolicy | null;
  #queue: Pending[] = [];
  #queuedImages = 0;
  #inFlight = 0;
  #timer: NodeJS.Timeout | null = null;
  #closing = false;
  #draining = false;
  #admitting = 0;
  #drained: Array<() => void> = [];
  #imageShape: ImageShape;

  constructor(model: Model, options: BatcherOptions = {}) {
    super();
    if (options === null || typeof options !== 'object') throw new OptionsError('batcher options must be an object');
    if (!model || typeof model.forward !== 'function') throw new OptionsError('Batcher needs a loaded Model');
    this.model = model;
    // Batches are joined into one native call, which takes at most limits.maxBatch images.
    this.maxBatchSize = intUpTo('maxBatchSize', options.maxBatchSize === undefined ? 32 : options.maxBatchSize, nativeLimits().maxBatch);
    this.maxInFlight = positiveInt('maxInFlight', options.maxInFlight, 1);
    this.maxQueue = positiveInt('maxQueue', options.maxQueue, 256);
    const wait = options.maxWaitMs ?? 2;
    if (typeof wait !== 'number' || !Number.isFinite(wait) || wait < 0)
      throw new OptionsError(`maxWaitMs must be a non-negative number, got ${String(wait)}`);
    this.maxWaitMs = wait;
    this.#imageShape = { inChans: model.architecture.inChans, imgSize: model.imgSize, maxBatch: nativeLimits().maxBatch };
    const a = options.adaptiveKeep;
    this.policy = a === undefined || a === false ? null : a instanceof AdaptiveKeepPolicy ? a : new AdaptiveKeepPolicy(a);
    // A policy's rates must all be valid schedules for this model: fail now, not on the first batch.
    if (this.policy) for (const r of this.policy.rates) model.scheduleFor({ keepRate: r });
  }

  /** The keep rate a request without its own would run with now. */
  get keepRate(): number | null {
    return this.policy ? this.policy.keepRate : this.model.schedule.keepRate;
  }

  /** Requests waiting for a batch. */
  get queued(): number {
    return this.#queue.length;
  }

  /** Native calls running. */
  get inFlight(): number {
    return this.#inFlight;
  }

  get closing(): boolean {
    return this.#closing;
  }

  /**
   * Runs a preprocessed tensor [B, C, H, W] (float32, or uint8 pixels: see Model.forward) as
   * part of a batch. The data is read, not copied, until the batch starts: do not modify it
   * before the promise settles.
   */
  forward(input: ImageTensor, options: BatchRequestOptions = {}): Promise<BatchedForward> {
    try {
      this.#checkAccepting(options?.signal);
      const { images, normalize } = this.#checkTensor(input);
      return this.#enqueue(input.data, normalize, images, options ?? {});
    } catch (err) {
      return Promise.reject(err as Error);
    }
  }

  /**
   * Classifies encoded images (Buffers or paths) or a preprocessed tensor as part
   * of a batch. Images are decoded and preprocessed before they queue.
   */
  async classify(
    inputs: ImageTensor | string | Buffer | ReadonlyArray<string | Buffer>,
    options: BatchClassifyOptions = {},
  ): Promise<BatchedClassify> {
    const { top: topOption, decode, ...request } = options ?? {};
    const top = positiveInt('top', topOption, 5);
    this.#checkAccepting(request.signal);
    // Accepted now: a close() during preprocessing still lets this request run.
    this.#admitting++;
    try {
      return await this.#classifyAdmitted(inputs, top, request, { ...decode, signal: request.signal ?? decode?.signal });
    } finally {
      this.#admitting--;
      this.#checkDrained();
    }
  }

  async #classifyAdmitted(
    inputs: ImageTensor | string | Buffer | ReadonlyArray<string | Buffer>,
    top: number,
    request: BatchRequestOptions,
    decode: DecodeLimits,
  ): Promise<BatchedClassify> {
    let tensor: ImageTensor;
    let names: string[];
    if (typeof inputs === 'string' || Buffer.isBuffer(inputs) || Array.isArray(inputs)) {
      const list = (Array.isArray(inputs) ? [...inputs] : [inputs]) as Array<string | Buffer>;
      if (list.length === 0) throw new InputError('classify needs at least one input');
      // 8-bit pixels: a quarter of the bytes to copy and upload; the backend normalises them.
      tensor = await preprocessPixels(list, this.model.preprocess, decode);
      names = list.map(inputName);
    } else {
      tensor = inputs as ImageTensor;
      names = [];
    }
    const { images, normalize } = this.#checkTensor(tensor);
    if (names.length === 0) names = Array.from({ length: images }, (_, i) => `tensor[${i}]`);
    const out = await this.#enqueue(tensor.data, normalize, images, request, true);
    const { logits: _l, shape: _s, kept: _k, ...serving } = out;
    return { results: classifications(names, out, top, this.model.labels), ...serving };
  }

  /**
   * Runs queued requests from now on without waiting for company, still accepting
   * new ones: the first step of a graceful shutdown, while callers still arrive.
   */
  drain(): void {
    this.#draining = true;
    this.#pump();
  }

  /**
   * Stops accepting requests (they fail with ClosedError) and resolves once every
   * accepted request has settled. Queued requests run without waiting for company.
   */
  close(): Promise<void> {
    this.#closing = true;
    const done = new Promise<void>((resolve) => this.#drained.push(resolve));
    this.#pump();
    this.#checkDrained();
    return done;
  }

  #checkAccepting(signal: AbortSignal | undefined): void {
    if (this.#closing) throw new ClosedError();
    if (signal?.aborted) throw new AbortedError('the request was aborted before it was queued', { cause: signal.reason });
  }

  /** Each request is checked on its own, so a bad one fails alone instead of failing the batch it joins. */
  #checkTensor(input: ImageTensor): { images: number; normalize: Normalize | null } {
    if (isPixelTensor(input)) {
      // uint8 holds no NaN: the shape and statistics are all there is to check.
      const { batch, mean, std } = checkPixelTensor(input, this.#imageShape, this.model.preprocess);
      return { images: batch, normalize: { mean, std, key: `${mean.join(',')}/${std.join(',')}` } };
    }
    const images = checkImageTensor(input as Tensor4D, this.#imageShape);
    input = input as Tensor4D;
    // The binding refuses a whole batch for one non-finite value: found here, it fails its own request only.
    const bad = firstNonFinite(input.data);
    if (bad >= 0) {
      const per = input.data.length / images;
      throw new InputError(`input image ${Math.floor(bad / per)} holds a non-finite value (${input.data[bad]} at element ${bad % per}); every pixel must be a finite number`);
    }
    return { images, normalize: null };
  }

  #enqueue(data: Float32Array | Uint8Array, normalize: Normalize | null, images: number, options: BatchRequestOptions,
    admitted = false): Promise<BatchedForward> {
    const { signal, keepRate } = options;
    if (!admitted) this.#checkAccepting(signal);
    else if (signal?.aborted) throw new AbortedError('the request was aborted before it was queued', { cause: signal.reason });
    if (keepRate !== undefined) this.model.scheduleFor({ keepRate }); // throws OptionsError when invalid
    if (this.#queue.length >= this.maxQueue)
      throw new OverloadedError(`the queue is full (${this.maxQueue} requests waiting); retry later`);
    return new Promise<BatchedForward>((resolve, reject) => {
      const p: Pending = {
        data, normalize, images, keepRate, signal, settled: false, onAbort: null, enqueuedAt: performance.now(),
        resolve: (r) => {
          if (p.settled) return;
          p.settled = true;
          if (p.onAbort) signal!.removeEventListener('abort', p.onAbort);
          resolve(r);
        },
        reject: (e) => {
          if (p.settled) return;
          p.settled = true;
          if (p.onAbort) signal!.removeEventListener('abort', p.onAbort);
          reject(e);
        },
      };
      if (signal) {
        p.onAbort = () => {
          const at = this.#queue.indexOf(p);
          if (at >= 0) {
            this.#queue.splice(at, 1);
            this.#queuedImages -= p.images;
          }
          // A running batch cannot be stopped; its result for this request is dropped.
          p.reject(new AbortedError(at >= 0 ? 'the request was aborted while queued' : 'the request was aborted while running', { cause: signal.reason }));
          this.#checkDrained();
        };
        signal.addEventListener('abort', p.onAbort, { once: true });
      }
      this.#queue.push(p);
      this.#queuedImages += images;
      this.#pump();
    });
  }

  #pump(): void {
    while (this.#inFlight < this.maxInFlight && this.#queue.length > 0) {
      const waited = performance.now() - this.#queue[0]!.enqueuedAt;
      if (!this.#closing && !this.#draining && this.#queuedImages < this.maxBatchSize && waited < this.maxWaitMs) {
        if (!this.#timer) {
          this.#timer = setTimeout(() => {
            this.#timer = null;
            this.#pump();
          }, this.maxWaitMs - waited);
        }
        return;
      }
      this.#dispatch();
    }
  }

  #dispatch(): void {
    if (this.#timer) {
      clearTimeout(this.#timer);
      this.#timer = null;
    }
    const start = performance.now();
    // Observe before choosing the rate, so this batch already runs at the updated one.
    if (this.policy) this.policy.observe(start - this.#queue[0]!.enqueuedAt, start);
    const rateOf = (p: Pending): number | undefined => p.keepRate ?? this.policy?.keepRate;
    const rate = rateOf(this.#queue[0]!);
    const kind = this.#queue[0]!.normalize?.key ?? null;
    const batch: Pending[] = [];
    let images = 0;
    for (let i = 0; i < this.#queue.length; ) {
      const p = this.#queue[i]!;
      if (rateOf(p) === rate && (p.normalize?.key ?? null) === kind && (batch.length === 0 || images + p.images <= this.maxBatchSize)) {
        batch.push(p);
        images += p.images;
        this.#queue.splice(i, 1);
        this.#queuedImages -= p.images;
        if (images >= this.maxBatchSize) break;
      } else {
        i++;
      }
    }
    this.#inFlight++;
    void this.#run(batch, images, rate, start);
  }

  async #run(batch: Pending[], images: number, keepRate: number | undefined, start: number): Promise<void> {
    const m = this.model;
    const per = m.architecture.inChans * m.imgSize * m.imgSize;
    const normalize = batch[0]!.normalize;
    let data: Float32Array | Uint8Array;
    if (batch.length === 1) {
      data = batch[0]!.data;
    } else {
      data = normalize ? new Uint8Array(images * per) : new Float32Array(images * per);
      let at = 0;
      for (const p of batch) {
        data.set(p.data, at);
        at += p.data.length;
      }
    }
    const shape = [images, m.architecture.inChans, m.imgSize, m.imgSize];
    const tensor: ImageTensor = normalize
      ? { dtype: 'uint8', data: data as Uint8Array, shape, mean: Array.from(normalize.mean), std: Array.from(normalize.std) }
      : { data: data as Float32Array, shape };
    const queueMs = batch.map((p) => start - p.enqueuedAt);
    let event: BatchEvent;
    try {
      const out = await m.forward(tensor, { keepRate });
      const runMs = performance.now() - start;
      const classes = out.shape[1];
      const served = out.schedule.keepRate;
      let row = 0;
      batch.forEach((p, j) => {
        const from = row;
        row += p.images;
        p.resolve({
          // Copies, so a caller holding its result does not keep the whole batch alive.
          logits: out.logits.slice(from * classes, row * classes),
          shape: [p.images, classes],
          kept: out.kept.map((k) => ({
            block: k.block,
            tokens: k.tokens.slice(from * k.shape[1], row * k.shape[1]),
            shape: [p.images, k.shape[1]] as [number, number],
          })),
          keepRate: served,
          batchSize: images,
          queueMs: queueMs[j]!,
          runMs,
        });
      });
      event = { images, requests: batch.length, keepRate: served, queueMs, runMs };
    } catch (err) {
      for (const p of batch) p.reject(err as Error);
      event = { images, requests: batch.length, keepRate: keepRate ?? m.schedule.keepRate, queueMs, runMs: performance.now() - start, error: err as Error };
    }
    this.#inFlight--;
    this.emit('batch', event);
    this.#pump();
    this.#checkDrained();
  }

  #checkDrained(): void {
    if (!this.#closing || this.#admitting > 0 || this.#queue.length > 0 || this.#inFlight > 0) return;
    const waiting = this.#drained.splice(0);
    // After the callers' own continuations: close() resolving means every caller has its answer.
    if (waiting.length) setImmediate(() => { for (const resolve of waiting) resolve(); });
  }
}
