/**
 * The one place a native failure becomes the user's error. The binding throws (or rejects with) an
 * Error whose `code` is EVIT_NATIVE or EVIT_NATIVE_ARGUMENT and whose message says what failed; the
 * user gets one NativeError with that message unchanged and the native error as its `cause`.
 * EVIT_BAD_INPUT (non-finite values in a batch, found while the binding copies it) becomes an
 * InputError the same way.
 */
import { InputError, NativeError } from '../errors';

export function toNativeError(err: unknown): NativeError | InputError {
  if (err instanceof NativeError || err instanceof InputError) return err;
  const message = err instanceof Error ? err.message : String(err);
  if ((err as { code?: unknown } | null)?.code === 'EVIT_BAD_INPUT') return new InputError(message, { cause: err });
  return new NativeError(message, { cause: err });
}

/** Runs a synchronous native call. */
export function callNative<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    throw toNativeError(err);
  }
}

/** Runs an asynchronous native call; a synchronous throw (refused arguments) is converted the same way. */
export async function callNativeAsync<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw toNativeError(err);
  }
}
