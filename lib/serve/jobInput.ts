/**
 * What a queue job carries, and how a worker turns it into batcher input: the
 * image's bytes (base64), a preprocessed `.npy` tensor (base64), a path the
 * worker may read, or an http(s) URL it may fetch, plus per-job options. Paths
 * and URLs are refused unless the worker was started with a directory or URL
 * prefix that covers them: a producer cannot make a worker read any file.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { FetchError, InputError, OptionsError } from '../errors';
import { fromBase64, optionalNumber, tensorFromNpy, type ClassifyInput } from './decode';
import { HttpError } from './httpErrors';
import type { ImageShape } from '../tensor';

/** The data of one job: exactly one of image, npy, path, url; then options. */
export interface JobData {
  /** A jpeg, png or webp, base64 (a data: URL is accepted). */
  image?: string;
  /** A `.npy` float32 tensor [B, C, H, W] or [C, H, W], base64, already preprocessed. */
  npy?: string;
  /** A file on the worker's machine, under one of its allowed directories: an image, or a `.npy` tensor. */
  path?: string;
  /** An http(s) URL, under one of the worker's allowed URL prefixes. */
  url?: string;
  /** Classes reported per image. Default: the worker's (5). */
  top?: number;
  /** Keep rate for this job; overrides the worker's. */
  keepRate?: number;
  /** Also return the kept-token origins per dropping block. */
  kept?: boolean;
}

export interface JobInputLimits {
  /** Directories (already resolved with realpath) whose files jobs may name. */
  allowPaths: readonly string[];
  /** URL prefixes jobs may fetch. */
  allowUrls: readonly string[];
  /** Largest image file or download, bytes. */
  maxBytes: number;
  /** Time allowed for one download, ms. */
  fetchTimeoutMs: number;
  /** The image tensor the model takes: `.npy` inputs are checked against it. */
  imageShape: ImageShape;
}

export interface JobRequest {
  input: ClassifyInput;
  top: number | undefined;
  keepRate: number | undefined;
  kept: boolean;
}

const SOURCES = ['image', 'npy', 'path', 'url'] as const;

function tooLarge(what: string, bytes: number, max: number): HttpError {
  return new HttpError(413, 'EVIT_BODY_TOO_LARGE', `${what} is ${bytes} bytes, over the limit of ${max}`);
}

async function readAllowedFile(file: unknown, limits: JobInputLimits): Promise<Buffer> {
  if (typeof file !== 'string' || file === '') throw new InputError('"path" must be a non-empty string');
  if (limits.allowPaths.length === 0) throw new InputError(`this worker reads no files (start it with --allow-path DIR); the job names ${JSON.stringify(file)}`);
  let real: string;
  try {
    // realpath: a symlink inside an allowed directory must not lead out of it.
    real = await fs.realpath(path.resolve(file));
  } catch (err) {
    throw new InputError(`cannot read ${JSON.stringify(file)}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message}`, { cause: err });
  }
  if (!limits.allowPaths.some((dir) => real === dir || real.startsWith(dir.endsWith(path.sep) ? dir : dir + path.sep)))
    throw new InputError(`${JSON.stringify(file)} is outside the directories this worker may read (${limits.allowPaths.join(', ')})`);
  let handle: fs.FileHandle;
  try {
    handle = await fs.open(real, 'r');
  } catch (err) {
    throw new InputError(`cannot read ${JSON.stringify(file)}: ${(err as Error).message}`, { cause: err });
  }
  try {
    const st = await handle.stat();
    if (!st.isFile()) throw new InputError(`${JSON.stringify(file)} is not a regular file`);
    if (st.size > limits.maxBytes) throw tooLarge(JSON.stringify(file), st.size, limits.maxBytes);
    return await handle.readFile();
  } finally {
    await handle.close();
  }
}

async function fetchAllowedUrl(url: unknown, limits: JobInputLimits): Promise<Buffer> {
  if (typeof url !== 'string' || url === '') throw new InputError('"url" must be a non-empty string');
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new InputError(`"url" is not a URL: ${JSON.stringify(url)}`);
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw new InputError(`"url" must be http or https, got ${parsed.protocol}`);
  if (!limits.allowUrls.some((prefix) => parsed.href.startsWith(prefix)))
    throw new InputError(limits.allowUrls.length === 0
      ? `this worker fetches no URLs (start it with --allow-url PREFIX); the job names ${parsed.href}`
      : `${parsed.href} is under none of the URL prefixes this worker may fetch (${limits.allowUrls.join(', ')})`);
  let res: Response;
  try {
    // Redirects are not followed: they could lead outside the allowed prefixes.
    res = await fetch(parsed, { redirect: 'manual', signal: AbortSignal.timeout(limits.fetchTimeoutMs) });
  } catch (err) {
    const e = err as Error;
    const why = e.name === 'TimeoutError' ? `no answer within ${limits.fetchTimeoutMs} ms` : (e.cause as Error | undefined)?.message ?? e.message;
    throw new FetchError(`GET ${parsed.href} failed: ${why}`, { cause: err });
  }
  if (!res.ok) {
    await res.body?.cancel().catch(() => {});
    const msg = `GET ${parsed.href} answered ${res.status}${res.statusText ? ` ${res.statusText}` : ''}`;
    // Worth another try: the server is down or busy. Anything else will not change.
    if (res.status >= 500 || res.status === 408 || res.status === 429) throw new FetchError(msg);
    throw new InputError(msg);
  }
  const declared = Number(res.headers.get('content-length') ?? NaN);
  if (declared > limits.maxBytes) {
    await res.body?.cancel().catch(() => {});
    throw tooLarge(parsed.href, declared, limits.maxBytes);
  }
  const chunks: Buffer[] = [];
  let total = 0;
  try {
    for await (const chunk of res.body ?? []) {
      total += (chunk as Uint8Array).length;
      if (total > limits.maxBytes) throw tooLarge(parsed.href, total, limits.maxBytes);
      chunks.push(Buffer.from(chunk as Uint8Array));
    }
  } catch (err) {
    if (err instanceof HttpError) throw err;
    throw new FetchError(`GET ${parsed.href} broke off: ${(err as Error).message}`, { cause: err });
  }
  if (total === 0) throw new InputError(`GET ${parsed.href} gave an empty body`);
  return Buffer.concat(chunks);
}

/** Reads a job's data into batcher input and options; bad data is an InputError / OptionsError. */
export async function readJob(data: unknown, limits: JobInputLimits): Promise<JobRequest> {
  if (data === null || typeof data !== 'object' || Array.isArray(data))
    throw new InputError(`job data must be an object with one of ${SOURCES.map((s) => `"${s}"`).join(', ')}`);
  const o = data as Record<string, unknown>;
  const has = SOURCES.filter((k) => o[k] !== undefined);
  if (has.length !== 1)
    throw new InputError(has.length === 0
      ? `job data needs one of "image" (base64 jpeg, png or webp), "npy" (base64 .npy), "path" or "url"`
      : `job data must hold only one of ${has.map((s) => `"${s}"`).join(', ')}`);
  if (o.kept !== undefined && typeof o.kept !== 'boolean') throw new OptionsError(`kept must be true or false, got ${JSON.stringify(o.kept)}`);
  const opts = { top: optionalNumber('top', o.top), keepRate: optionalNumber('keepRate', o.keepRate), kept: o.kept === true };
  let input: ClassifyInput;
  switch (has[0]) {
    case 'image': input = { kind: 'image', image: fromBase64('image', o.image) }; break;
    case 'npy': input = { kind: 'tensor', tensor: tensorFromNpy(fromBase64('npy', o.npy), limits.imageShape) }; break;
    case 'path': {
      const bytes = await readAllowedFile(o.path, limits);
      input = /\.npy$/i.test(o.path as string) ? { kind: 'tensor', tensor: tensorFromNpy(bytes, limits.imageShape) } : { kind: 'image', image: bytes };
      break;
    }
    default: input = { kind: 'image', image: await fetchAllowedUrl(o.url, limits) };
  }
  if (input.kind === 'image' && input.image.length > limits.maxBytes) throw tooLarge('the image', input.image.length, limits.maxBytes);
  return { input, ...opts };
}
