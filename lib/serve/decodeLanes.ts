/**
 * Decode lanes: requests are sorted by what their images cost to decode, read from the image
 * headers. Small requests decode at once; large ones (more pixels in all than `largePixels`) take
 * a place in the large lane first, which holds `largeDecodes` requests at a time, each decoding
 * one image at a time. Image decoding and the forward pass share libuv's thread pool (4 threads by
 * default): however many large images arrive, they hold at most `largeDecodes` of its threads, so
 * a small request and the next forward pass never queue behind them.
 */
import { AbortedError, OverloadedError } from '../errors';
import type { DecodeLimits } from '../preprocess';
import { positiveInt } from '../validate';

export interface DecodeLaneOptions {
  /** Requests whose images hold more pixels than this in all take the large lane. Default 4 million. */
  largeImagePixels?: number;
  /** Large requests decoding at once (each one image at a time). Default 1. */
  largeDecodes?: number;
  /** Large requests waiting for the lane beyond which new ones are refused (OverloadedError). Default 16. */
  largeQueue?: number;
}

export const DEFAULT_LARGE_IMAGE_PIXELS = 4_000_000;

interface Waiter {
  resolve: () => void;
  reject: (e: Error) => void;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | null;
}

export class DecodeLanes {
  readonly largeImagePixels: number;
  readonly largeDecodes: number;
  readonly largeQueue: number;
  #running = 0;
  #waiting: Waiter[] = [];

  constructor(options: DecodeLaneOptions = {}) {
    this.largeImagePixels = positiveInt('largeImagePixels', options.largeImagePixels, DEFAULT_LARGE_IMAGE_PIXELS);
    this.largeDecodes = positiveInt('largeDecodes', options.largeDecodes, 1);
    // A queue worker's own concurrency bounds its waiting jobs: it passes Infinity.
    const q = options.largeQueue ?? 16;
    this.largeQueue = q === Infinity ? q : positiveInt('largeQueue', q, 16);
  }

  /** Large requests decoding now. */
  get largeRunning(): number {
    return this.#running;
  }

  /** Large requests waiting for the lane. */
  get largeWaiting(): number {
    return this.#waiting.length;
  }

  /**
   * Runs `work` in the lane its `pixels` (the request's images, from their headers) call for,
   * with the decode limits of that lane. A large request waits for its place; aborting `signal`
   * takes it out of the line (AbortedError), and a full line refuses it (OverloadedError).
   */
  async run<T>(pixels: number, limits: DecodeLimits, work: (limits: DecodeLimits) => Promise<T>): Promise<T> {
    if (pixels <= this.largeImagePixels) return work(limits);
    await this.#acquire(limits.signal);
    try {
      // One image at a time, so a request of many large images holds one thread, not one per core.
      return await work({ ...limits, concurrency: 1 });
    } finally {
      this.#release();
    }
  }

  #acquire(signal: AbortSignal | undefined): Promise<void> {
    if (signal?.aborted) return Promise.reject(new AbortedError('the request was aborted before its images were decoded', { cause: signal.reason }));
    if (this.#running < this.largeDecodes) {
      this.#running++;
      return Promise.resolve();
    }
    if (this.#waiting.length >= this.largeQueue)
      return Promise.reject(new OverloadedError(`${this.#waiting.length} requests with large images are already waiting to be decoded; retry later`));
    return new Promise<void>((resolve, reject) => {
      const w: Waiter = { resolve, reject, signal, onAbort: null };
      if (signal) {
        w.onAbort = () => {
          const at = this.#waiting.indexOf(w);
          if (at >= 0) this.#waiting.splice(at, 1);
          reject(new AbortedError('the request was aborted while its large images waited to be decoded', { cause: signal.reason }));
        };
        signal.addEventListener('abort', w.onAbort, { once: true });
      }
      this.#waiting.push(w);
    });
  }

  #release(): void {
    const next = this.#waiting.shift();
    if (!next) {
      this.#running--;
      return;
    }
    // The place passes straight to the next in line.
    if (next.onAbort) next.signal!.removeEventListener('abort', next.onAbort);
    next.resolve();
  }
}
