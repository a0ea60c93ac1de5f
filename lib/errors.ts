/**
 * Every error evit throws is an EvitError with a stable `code`, so callers can
 * branch on `err.code` instead of parsing messages.
 */
export class EvitError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/** A checkpoint file is malformed, truncated, or does not describe a supported model. */
export class WeightsError extends EvitError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('EVIT_BAD_WEIGHTS', message, options);
  }
}

/** Options passed to loadModel / forward / classify are invalid (keep rate, drop blocks, sizes...). */
export class OptionsError extends EvitError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('EVIT_BAD_OPTIONS', message, options);
  }
}

/** An input tensor or image has the wrong shape, dtype, or could not be decoded. */
export class InputError extends EvitError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('EVIT_BAD_INPUT', message, options);
  }
}

/** The model was used after dispose(). */
export class DisposedError extends EvitError {
  constructor(message = 'model has been disposed') {
    super('EVIT_DISPOSED', message);
  }
}

/** The native addon could not be loaded or failed while running. */
export class NativeError extends EvitError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('EVIT_NATIVE', message, options);
  }
}

/** A batcher's queue is full: the caller should retry later (HTTP 429). */
export class OverloadedError extends EvitError {
  constructor(message: string) {
    super('EVIT_OVERLOADED', message);
  }
}

/** The batcher is closing and accepts no new work (HTTP 503). */
export class ClosedError extends EvitError {
  constructor(message = 'the batcher is shutting down and accepts no new requests') {
    super('EVIT_CLOSED', message);
  }
}

/** The caller's AbortSignal fired before its result was ready; `cause` is the signal's reason. */
export class AbortedError extends EvitError {
  constructor(message = 'the request was aborted', options?: { cause?: unknown }) {
    super('EVIT_ABORTED', message, options);
  }
}

/** device: 'cuda' was asked for (option or EVIT_DEVICE) but CUDA cannot run here; the message says why. */
export class DeviceError extends EvitError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('EVIT_NO_DEVICE', message, options);
  }
}

/** A queue job's image URL could not be fetched (network error, timeout, or a 5xx/408/429 answer): the job is retried. */
export class FetchError extends EvitError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('EVIT_FETCH_FAILED', message, options);
  }
}

/** A queue job failed; `code` is the error code the worker failed it with (EVIT_BAD_INPUT, ...). */
export class JobFailedError extends EvitError {
  readonly jobId: string | undefined;
  constructor(code: string, message: string, jobId: string | undefined, options?: { cause?: unknown }) {
    super(code, message, options);
    this.jobId = jobId;
  }
}

/** Waiting for a queue job's result took longer than the caller allowed; the job itself may still finish. */
export class TimeoutError extends EvitError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('EVIT_TIMEOUT', message, options);
  }
}
