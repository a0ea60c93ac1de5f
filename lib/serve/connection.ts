/**
 * The Redis connection of queue workers and producers: a `redis://` URL or
 * BullMQ's connection options, normalised the way BullMQ wants them.
 */
import type { ConnectionOptions } from 'bullmq';
import { OptionsError } from '../errors';

/** A redis:// or rediss:// URL, or BullMQ (ioredis) connection options. */
export type QueueConnection = string | ConnectionOptions;

export function connectionOptions(c: QueueConnection): ConnectionOptions {
  if (typeof c === 'string') {
    let url: URL;
    try {
      url = new URL(c);
    } catch {
      throw new OptionsError(`connection must be a redis:// URL, got ${JSON.stringify(c)}`);
    }
    if (url.protocol !== 'redis:' && url.protocol !== 'rediss:')
      throw new OptionsError(`connection must be a redis:// or rediss:// URL, got ${JSON.stringify(c)}`);
    // BullMQ's workers block on Redis; a command must wait for a reconnect rather than fail.
    return { url: c, maxRetriesPerRequest: null };
  }
  if (c === null || typeof c !== 'object') throw new OptionsError('connection must be a redis:// URL or connection options');
  return c;
}

export function queueName(v: unknown): string {
  // BullMQ keys are PREFIX:NAME:...: a colon in the name would split them.
  if (typeof v !== 'string' || v === '' || v.includes(':')) throw new OptionsError(`queue must be a non-empty name without ':', got ${JSON.stringify(v)}`);
  return v;
}
