/**
 * The small HTTP server of `evit worker`: GET /metrics, and the v2 health routes
 * (/v2/health/live, /v2/health/ready) for Kubernetes probes. A worker takes its
 * work from Redis, not from HTTP, so this is all it answers.
 */
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { ServingMetrics } from './metrics';

export interface StatusSource {
  readonly metrics: ServingMetrics;
  /** Loaded, connected and taking jobs. */
  readonly ready: boolean;
}

export interface StatusServer {
  /** http://host:port */
  readonly url: string;
  close(): Promise<void>;
}

function send(res: http.ServerResponse, status: number, type: string, body: string): void {
  res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

/** Listens on host:port (0 picks a free port); `source()` is null while the model loads. */
export async function listenStatus(host: string, port: number, source: () => StatusSource | null): Promise<StatusServer> {
  const server = http.createServer((req, res) => {
    const url = (req.url ?? '/').split('?')[0];
    const s = source();
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(res, 405, 'application/json', JSON.stringify({ error: 'only GET', code: 'EVIT_BAD_REQUEST' }));
    if (url === '/v2/health/live') return send(res, 200, 'application/json', JSON.stringify({ live: true }));
    // The protocol: 200 means true, a 4xx false.
    if (url === '/v2/health/ready') return send(res, s?.ready ? 200 : 400, 'application/json', JSON.stringify({ ready: s?.ready === true }));
    if (url === '/metrics') {
      if (!s) return send(res, 503, 'application/json', JSON.stringify({ error: 'the model is still loading', code: 'EVIT_NOT_READY' }));
      s.metrics.render().then(
        (text) => send(res, 200, s.metrics.contentType, text),
        (err: Error) => send(res, 500, 'application/json', JSON.stringify({ error: err.message, code: 'EVIT_INTERNAL' })),
      );
      return;
    }
    send(res, 404, 'application/json', JSON.stringify({ error: `no route ${req.method} ${url}`, code: 'EVIT_NOT_FOUND' }));
  });
  server.keepAliveTimeout = 5000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const a = server.address() as AddressInfo;
  const shown = a.family === 'IPv6' ? `[${a.address}]` : a.address;
  return {
    url: `http://${shown}:${a.port}`,
    close: () => new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeIdleConnections();
    }),
  };
}
