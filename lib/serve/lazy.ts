/**
 * The server entry points as the package exports them: fastify is loaded on first
 * use, so `require('evit')` stays light for programs that never serve.
 */
import type { FastifyInstance, FastifyPluginAsync } from 'fastify';
import type { EvitPluginOptions, ServeOptions } from './server';

type ServerModule = typeof import('./server');
let loaded: ServerModule | null = null;
const load = (): ServerModule => (loaded ??= require('./server') as ServerModule);

/** A fastify instance with the evit plugin mounted at the root; call `listen()` on it. */
export function createServer(options: ServeOptions): FastifyInstance {
  return load().createServer(options);
}

/** The fastify plugin: POST /v1/classify, GET /healthz, GET /metrics. */
export const evitPlugin: FastifyPluginAsync<EvitPluginOptions> = (app, options) => load().evitPlugin(app, options);
