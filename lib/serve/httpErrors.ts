/**
 * How errors become HTTP responses: every error is `{error: {code, message}}`
 * with a 4xx status for anything the client can fix or retry, 500 otherwise.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import { EvitError } from '../errors';

/** A request the server refuses, with the HTTP status it answers. */
export class HttpError extends EvitError {
  readonly statusCode: number;
  constructor(statusCode: number, code: string, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
    this.statusCode = statusCode;
  }
}

const EVIT_STATUS: Record<string, number> = {
  EVIT_BAD_INPUT: 400,
  EVIT_BAD_OPTIONS: 400,
  EVIT_OVERLOADED: 429,
  EVIT_CLOSED: 503,
  EVIT_ABORTED: 499,
};

// Fastify's own client errors, renamed into this package's codes.
const FASTIFY_CODES: Record<string, string> = {
  FST_ERR_CTP_BODY_TOO_LARGE: 'EVIT_BODY_TOO_LARGE',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'EVIT_UNSUPPORTED_MEDIA_TYPE',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'EVIT_BAD_REQUEST',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'EVIT_BAD_REQUEST',
  FST_ERR_CTP_INVALID_JSON_BODY: 'EVIT_BAD_REQUEST',
  FST_ERR_CTP_EMPTY_TYPE: 'EVIT_UNSUPPORTED_MEDIA_TYPE',
  FST_ERR_CTP_INVALID_TYPE: 'EVIT_UNSUPPORTED_MEDIA_TYPE',
};

export interface ErrorBody {
  error: { code: string; message: string };
}

/** The status and JSON body answering `err`; `internal` is true for a server fault (logged). */
export function toHttpError(err: unknown): { status: number; body: ErrorBody; internal: boolean } {
  const e = err as { statusCode?: unknown; code?: unknown; message?: unknown; name?: string };
  const message = typeof e?.message === 'string' ? e.message : String(err);
  if (err instanceof HttpError) return { status: err.statusCode, body: { error: { code: err.code, message } }, internal: false };
  if (err instanceof EvitError && EVIT_STATUS[err.code] !== undefined)
    return { status: EVIT_STATUS[err.code]!, body: { error: { code: err.code, message } }, internal: false };
  const status = typeof e?.statusCode === 'number' ? e.statusCode : 500;
  if (status >= 400 && status < 500) {
    const raw = typeof e.code === 'string' ? e.code : '';
    const code = FASTIFY_CODES[raw] ?? (e.name === 'SyntaxError' ? 'EVIT_BAD_REQUEST' : raw.startsWith('EVIT_') ? raw : 'EVIT_BAD_REQUEST');
    return { status, body: { error: { code, message } }, internal: false };
  }
  return { status: 500, body: { error: { code: 'EVIT_INTERNAL', message: 'internal server error' } }, internal: true };
}

/**
 * fastify closes the connection on a body it refused unread; a client still sending it then gets a
 * reset and may never read its 413. A declared body up to twice the limit is read and thrown away
 * instead (the request timeout still bounds it), so the answer arrives and the connection stays
 * usable; anything larger is cut off at once.
 */
export function drainRefusedBody(req: FastifyRequest, reply: FastifyReply, bodyLimit: number): void {
  const declared = Number(req.headers['content-length']);
  if (Number.isSafeInteger(declared) && declared <= 2 * bodyLimit && !req.raw.complete) reply.removeHeader('connection');
}
