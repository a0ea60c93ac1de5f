/**
 * A standalone fastify server around the evit plugin, as `evit serve` runs it.
 */
import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify';
import { DEFAULT_BODY_LIMIT, evitPlugin, type EvitPluginOptions } from './plugin';
import { toHttpError } from './httpErrors';
import { positiveInt } from '../validate';

export { evitPlugin, DEFAULT_BODY_LIMIT, DEFAULT_MAX_PIXELS } from './plugin';
export type { EvitPluginOptions } from './plugin';

export const DEFAULT_REQUEST_TIMEOUT_MS = 30_000;

export interface ServeOptions extends EvitPluginOptions {
  /** Fastify's logger option. Default false. */
  logger?: FastifyServerOptions['logger'];
  /** Time allowed to receive a whole request, headers and body, ms (slow clients get 408). Default 30 000. */
  requestTimeoutMs?: number;
}

/**
 * How often Node looks for requests past their timeout. Its default (30 s) let a 30 s timeout
 * fire at up to 60 s; a tenth of the timeout, at most a second, keeps the 408 close to on time.
 */
export function timeoutCheckInterval(requestTimeoutMs: number): number {
  return Math.max(25, Math.min(1000, Math.floor(requestTimeoutMs / 10)));
}

/**
 * Errors Node's HTTP parser raises before a request reaches a route (a request not received in
 * time, headers too large, a malformed request), answered in the server's JSON error format.
 */
function clientErrorHandler(requestTimeoutMs: number) {
  return (err: NodeJS.ErrnoException, socket: Socket): void => {
    // A reset connection has nobody left to answer.
    if (err.code === 'ECONNRESET' || socket.destroyed) return;
    let status: number;
    let code: string;
    let message: string;
    if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') {
      [status, code, message] = [408, 'EVIT_REQUEST_TIMEOUT', `the request was not received within ${requestTimeoutMs} ms`];
    } else if (err.code === 'HPE_HEADER_OVERFLOW') {
      [status, code, message] = [431, 'EVIT_HEADERS_TOO_LARGE', 'the request headers are over the size limit'];
    } else {
      [status, code, message] = [400, 'EVIT_BAD_REQUEST', `malformed HTTP request${err.code ? ` (${err.code})` : ''}`];
    }
    const body = JSON.stringify({ error: { code, message } });
    if (!socket.writable) {
      socket.destroy();
      return;
    }
    socket.end(
      `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: application/json; charset=utf-8\r\n` +
        `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
      // Closed once written, whether or not the client ever closes its side.
      () => socket.destroy(),
    );
  };
}

/** A fastify instance with the plugin mounted at the root; call `listen()` on it. */
export function createServer(options: ServeOptions): FastifyInstance {
  const { logger = false, requestTimeoutMs: timeoutOption, ...plugin } = options;
  const requestTimeoutMs = positiveInt('requestTimeoutMs', timeoutOption, DEFAULT_REQUEST_TIMEOUT_MS);
  const app = Fastify({
    logger,
    requestTimeout: requestTimeoutMs,
    // Node's own defaults give headers 60 s and check every 30 s: slow clients held a worker twice as long as asked.
    http: {
      requestTimeout: requestTimeoutMs,
      headersTimeout: requestTimeoutMs,
      connectionsCheckingInterval: timeoutCheckInterval(requestTimeoutMs),
    },
    clientErrorHandler: clientErrorHandler(requestTimeoutMs),
    bodyLimit: plugin.bodyLimit ?? DEFAULT_BODY_LIMIT,
    // The plugin answers requests that arrive during shutdown itself, in its JSON error format.
    return503OnClosing: false,
    forceCloseConnections: 'idle',
  });
  app.register(evitPlugin, plugin);
  app.setNotFoundHandler((req, reply) =>
    reply.code(404).send({ error: { code: 'EVIT_NOT_FOUND', message: `no route ${req.method} ${req.url.split('?')[0]}` } }));
  app.setErrorHandler((err, req, reply) => {
    const h = toHttpError(err);
    if (h.internal) req.log.error({ err }, 'request failed');
    return reply.code(h.status).send(h.body);
  });
  return app;
}
