/**
 * Which backend a model runs on: the `device` option, else the EVIT_DEVICE environment
 * variable, else 'auto' (CUDA when the addon has it and a usable device is present).
 */
import { DeviceError, OptionsError } from './errors';
import { nativeLimits, type BackendInfo, type NativeLimits, type Precision } from './native';
import { intUpTo } from './validate';

export type DeviceOption = 'auto' | 'cpu' | 'cuda';

const DEVICES: readonly DeviceOption[] = ['auto', 'cpu', 'cuda'];
const PRECISIONS: readonly Precision[] = ['f32', 'f16', 'bf16'];

/** Defaults of the CUDA backend (docs/CUDA.md says why). */
export const DEFAULT_PRECISION: Precision = 'bf16';
export const DEFAULT_MAX_BATCH = 64;
export const DEFAULT_STREAMS = 2;

export interface DeviceChoice {
  backend: 'cpu' | 'cuda';
  /** Why the model does not run on CUDA; null when it does. */
  reason: string | null;
  /** Where the request came from, for messages. */
  requested: DeviceOption;
  source: 'option' | 'EVIT_DEVICE' | 'default';
}

/** The device request in effect: an explicit option wins over EVIT_DEVICE, which wins over 'auto'. */
export function requestedDevice(option: unknown, env: NodeJS.ProcessEnv = process.env): Pick<DeviceChoice, 'requested' | 'source'> {
  if (option !== undefined) {
    if (!DEVICES.includes(option as DeviceOption))
      throw new OptionsError(`device must be 'auto', 'cpu' or 'cuda', got ${JSON.stringify(option)}`);
    return { requested: option as DeviceOption, source: 'option' };
  }
  const fromEnv = env.EVIT_DEVICE;
  if (fromEnv !== undefined && fromEnv !== '') {
    const v = fromEnv.trim().toLowerCase();
    if (!DEVICES.includes(v as DeviceOption))
      throw new OptionsError(`EVIT_DEVICE must be 'auto', 'cpu' or 'cuda', got ${JSON.stringify(fromEnv)}`);
    return { requested: v as DeviceOption, source: 'EVIT_DEVICE' };
  }
  return { requested: 'auto', source: 'default' };
}

/** Resolves the request against what the addon reports; throws DeviceError when 'cuda' cannot be had. */
export function resolveDevice(option: unknown, cuda: BackendInfo['cuda'], env: NodeJS.ProcessEnv = process.env): DeviceChoice {
  const { requested, source } = requestedDevice(option, env);
  const origin = source === 'EVIT_DEVICE' ? 'EVIT_DEVICE=' : 'device: ';
  if (requested === 'cpu')
    return { backend: 'cpu', reason: `${origin}'cpu' was requested`, requested, source };
  if (cuda.available) return { backend: 'cuda', reason: null, requested, source };
  const why = cuda.reason ?? 'CUDA is not available';
  if (requested === 'cuda') throw new DeviceError(`${origin}'cuda' was requested but CUDA cannot be used: ${why}`);
  return { backend: 'cpu', reason: why, requested, source };
}

export interface CudaSettings {
  precision: Precision;
  maxBatch: number;
  streams: number;
}

/** Checks the CUDA options (whatever the device, so a typo fails on every machine alike) against the addon's limits. */
export function cudaSettings(
  options: { precision?: unknown; maxBatch?: unknown; streams?: unknown },
  limits: NativeLimits = nativeLimits(),
): CudaSettings {
  const { precision = DEFAULT_PRECISION, maxBatch = DEFAULT_MAX_BATCH, streams = DEFAULT_STREAMS } = options;
  if (!PRECISIONS.includes(precision as Precision))
    throw new OptionsError(`precision must be 'f32', 'f16' or 'bf16', got ${JSON.stringify(precision)}`);
  return {
    precision: precision as Precision,
    maxBatch: intUpTo('maxBatch', maxBatch, limits.maxBatch),
    streams: intUpTo('streams', streams, limits.maxStreams),
  };
}
