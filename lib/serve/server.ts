/**
 * A standalone fastify server around the evit plugin, as `evit serve` runs it.
 */
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify';
import { DEFAULT_BODY_LIMIT, evitPlugin, type EvitPluginOptions } from './plugin';
import { toHttpError } from './httpErrors';

export { evitPlugin, DEFAULT_BODY_LIMIT, DEFAULT_MAX_PIXELS } from './plugin';
export type { EvitPluginOptions } from './plugin';

export interface ServeOptions extends EvitPluginOptions {
  /** Fastify's logger option. Default false. */
  logger?: FastifyServerOptions['logger'];
  /** Time allowed to receive a whole request, ms (slow clients get 408). Default 30 000. */
  requestTimeoutMs?: number;
}

/** A fastify instance with the plugin mounted at the root; call `listen()` on it. */
export function createServer(options: ServeOptions): FastifyInstance {
  const { logger = false, requestTimeoutMs = 30_000, ...plugin } = options;
  const app = Fastify({
    logger,
    requestTimeout: requestTimeoutMs,
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
