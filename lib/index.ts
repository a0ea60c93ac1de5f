/**
 * evit: Vision Transformer inference with EViT token reorganisation.
 */
export { loadModel, Model } from './model';
export type { LoadOptions, Tensor4D, ForwardOptions, ForwardProfile, ForwardOutput, KeptTokens, Classification, ClassifyOptions, TopClass } from './model';
export { keepSchedule, DEFAULT_DROP_LOC, DEFAULT_KEEP_RATE } from './schedule';
export type { Schedule, ScheduleOptions } from './schedule';
export { EvitError, WeightsError, OptionsError, InputError, DisposedError, NativeError } from './errors';
export { NAMED_ARCHS } from './weights/architecture';
export type { Architecture } from './weights/architecture';
export { readSafetensors, parseSafetensors, serializeSafetensors } from './weights/safetensors';
export { readNpy, parseNpy, serializeNpy } from './npy';
export { preprocessImage, preprocessBatch, resolvePreprocess } from './preprocess';
export type { PreprocessOptions } from './preprocess';
export { resizePosEmbed } from './weights/posEmbed';

import { loadBinding, type BackendInfo } from './native';
export type { BackendInfo } from './native';

/** What the native addon was built with and what it can use on this machine. */
export function backendInfo(): BackendInfo {
  return loadBinding().backendInfo();
}
