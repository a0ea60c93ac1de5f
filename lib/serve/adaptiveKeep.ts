/**
 * Load-adaptive keep rate: under load, EViT can trade a little accuracy for
 * throughput by keeping fewer tokens. The policy steps down a ladder of keep
 * rates (e.g. 0.9 → 0.7 → 0.5) while the queueing delay stays above a latency
 * target, and back up once the delay has fallen well below it.
 */
import { OptionsError } from '../errors';

export interface AdaptiveKeepOptions {
  /** Keep rates from the most accurate to the cheapest, strictly decreasing, each in (0, 1]. Default [0.9, 0.7, 0.5]. */
  rates?: readonly number[];
  /** Queueing delay (ms) above which the policy steps down. Default 50. */
  targetMs?: number;
  /** Step back up when the delay is below `targetMs · lowWater`. In (0, 1), default 0.5. */
  lowWater?: number;
  /** Consecutive observations on the same side of the target before a step. Default 3. */
  patience?: number;
  /** Minimum time (ms) between two steps, so one step can take effect before the next. Default 200. */
  holdMs?: number;
}

export interface KeepRateChange {
  /** performance.now() of the change. */
  at: number;
  from: number;
  to: number;
  /** The queueing delay (ms) that triggered it. */
  delayMs: number;
}

function positive(name: string, v: unknown, allowZero = false): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0 || (!allowZero && v === 0))
    throw new OptionsError(`adaptive keep ${name} must be a ${allowZero ? 'non-negative' : 'positive'} number, got ${String(v)}`);
  return v;
}

export class AdaptiveKeepPolicy {
  readonly rates: readonly number[];
  readonly targetMs: number;
  readonly lowWater: number;
  readonly patience: number;
  readonly holdMs: number;
  #level = 0;
  #over = 0;
  #under = 0;
  #lastChange = -Infinity;
  #changes: KeepRateChange[] = [];
  #listeners = new Set<(change: KeepRateChange) => void>();

  constructor(options: AdaptiveKeepOptions = {}) {
    if (options === null || typeof options !== 'object') throw new OptionsError('adaptive keep options must be an object');
    const rates = options.rates ?? [0.9, 0.7, 0.5];
    if (!Array.isArray(rates) || rates.length < 2)
      throw new OptionsError(`adaptive keep rates must list at least two keep rates, got ${JSON.stringify(rates)}`);
    rates.forEach((r, i) => {
      if (typeof r !== 'number' || !(r > 0 && r <= 1))
        throw new OptionsError(`adaptive keep rates[${i}] must be in (0, 1], got ${String(r)}`);
      if (i > 0 && r >= rates[i - 1]!)
        throw new OptionsError(`adaptive keep rates must be strictly decreasing, got ${rates.join(', ')}`);
    });
    this.rates = Object.freeze([...rates]);
    this.targetMs = positive('targetMs', options.targetMs ?? 50);
    this.lowWater = options.lowWater ?? 0.5;
    if (typeof this.lowWater !== 'number' || !(this.lowWater > 0 && this.lowWater < 1))
      throw new OptionsError(`adaptive keep lowWater must be in (0, 1), got ${String(this.lowWater)}`);
    this.patience = options.patience ?? 3;
    if (!Number.isInteger(this.patience) || this.patience < 1)
      throw new OptionsError(`adaptive keep patience must be a positive integer, got ${String(this.patience)}`);
    this.holdMs = positive('holdMs', options.holdMs ?? 200, true);
  }

  /** The keep rate new batches should run with. */
  get keepRate(): number {
    return this.rates[this.#level]!;
  }

  /** 0 for the first (most accurate) rate, rates.length − 1 for the cheapest. */
  get level(): number {
    return this.#level;
  }

  /** Every step taken so far, oldest first (at most the last 1000). */
  get changes(): readonly KeepRateChange[] {
    return this.#changes;
  }

  /** Calls `listener` on every step; returns a function that removes it. */
  onChange(listener: (change: KeepRateChange) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /**
   * Records the queueing delay of one dispatched batch (its oldest request's wait)
   * and steps the keep rate when the delay has stayed on one side of the target.
   */
  observe(delayMs: number, now: number = performance.now()): number {
    if (!Number.isFinite(delayMs) || delayMs < 0) return this.keepRate;
    if (delayMs > this.targetMs) {
      this.#over++;
      this.#under = 0;
    } else if (delayMs < this.targetMs * this.lowWater) {
      this.#under++;
      this.#over = 0;
    } else {
      this.#over = 0;
      this.#under = 0;
    }
    if (now - this.#lastChange < this.holdMs) return this.keepRate;
    if (this.#over >= this.patience && this.#level < this.rates.length - 1) this.#step(+1, delayMs, now);
    else if (this.#under >= this.patience && this.#level > 0) this.#step(-1, delayMs, now);
    return this.keepRate;
  }

  #step(dir: 1 | -1, delayMs: number, now: number): void {
    const from = this.keepRate;
    this.#level += dir;
    this.#over = 0;
    this.#under = 0;
    this.#lastChange = now;
    const change = { at: now, from, to: this.keepRate, delayMs };
    this.#changes.push(change);
    if (this.#changes.length > 1000) this.#changes.shift();
    for (const l of this.#listeners) l(change);
  }
}
