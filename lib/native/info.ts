/**
 * The addon's limits and profile layout. They are constants of the build, so backendInfo() is asked
 * once; TypeScript takes them from here instead of repeating the numbers and names.
 */
import { loadBinding } from './loader';
import type { NativeLimits, NativeProfileSlots } from './types';

let constants: { limits: NativeLimits; profileSlots: NativeProfileSlots } | undefined;

function read(): { limits: NativeLimits; profileSlots: NativeProfileSlots } {
  if (!constants) {
    const { limits, profileSlots } = loadBinding().backendInfo();
    constants = { limits, profileSlots };
  }
  return constants;
}

/** Largest batch, thread pool and CUDA stream count the binding accepts. */
export function nativeLimits(): NativeLimits {
  return read().limits;
}

/** Names of the entries of a forward pass's profile: model slots, then block slots per block. */
export function profileSlots(): NativeProfileSlots {
  return read().profileSlots;
}
