/**
 * The one place a native failure becomes the user's error. The binding throws (or rejects with) an
 * Error whose `code` is EVIT_NATIVE or EVIT_NATIVE_ARGUMENT and whose message says what failed; the
 * user gets one NativeError with that message unchanged and the native error as its `cause`.
 */
import { NativeError } from '../errors';

export function toNativeError(err: unknown): NativeError {
  if (err instanceof NativeError) return err;
  return new NativeError(err instanceof Error ? err.message : String(err), { cause: err });
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
