/**
 * evit: Vision Transformer inference with EViT token reorganisation.
 */
export { loadModel, Model } from './model';
export type { LoadOptions, Tensor4D, PixelTensor, ImageTensor, ForwardOptions, ForwardProfile, ForwardOutput, KeptTokens, Classification, ClassifyOptions, TopClass } from './model';
export type { ShuntedForwardProfile, ShuntedBlockOp } from './model';
export { keepSchedule, DEFAULT_DROP_LOC, DEFAULT_KEEP_RATE } from './schedule';
export type { Schedule, ScheduleOptions } from './schedule';
export { EvitError, WeightsError, OptionsError, InputError, DisposedError, NativeError } from './errors';
export { OverloadedError, ClosedError, AbortedError } from './errors';
export { FetchError, JobFailedError, TimeoutError } from './errors';
export { DeviceError } from './errors';
export type { DeviceOption } from './device';
export type { Precision } from './native';
export { Batcher } from './serve/batcher';
export type { BatcherOptions, BatchRequestOptions, BatchClassifyOptions, BatchServing, BatchedForward, BatchedClassify, BatchEvent } from './serve/batcher';
export { AdaptiveKeepPolicy } from './serve/adaptiveKeep';
export type { AdaptiveKeepOptions, KeepRateChange } from './serve/adaptiveKeep';
export { evitPlugin, createServer, createWorker, enqueue, waitForResult, openJobQueue } from './serve/lazy';
export type { EvitPluginOptions, ServeOptions } from './serve/server';
export type { ClassifyResponse, ClassifyResult } from './serve/response';
export type { EvitWorker, WorkerOptions } from './serve/queueWorker';
export type { EnqueueOptions, JobImage, JobQueue, JobQueueOptions, WaitOptions } from './serve/enqueue';
export type { JobData } from './serve/jobInput';
export type { QueueConnection } from './serve/connection';
export type { ServingMetrics, ServingMetricsOptions } from './serve/metrics';
export { NAMED_ARCHS } from './weights/architecture';
export type { Architecture } from './weights/architecture';
export { SHUNTED_ARCHS, isShuntedCheckpoint, validShuntedInputSize } from './weights/shunted';
export type { ShuntedArchitecture } from './weights/shunted';
export { readSafetensors, parseSafetensors, serializeSafetensors } from './weights/safetensors';
export { readCheckpoint, parseCheckpoint } from './weights/checkpoint';
export type { Checkpoint, CheckpointFormat } from './weights/checkpoint';
export { detectVariant } from './weights/deit3';
export type { Variant, VariantInfo } from './weights/deit3';
export { readNpy, parseNpy, serializeNpy } from './npy';
export { preprocessImage, preprocessBatch, preprocessPixels, normalizationTable, resolvePreprocess } from './preprocess';
export type { PreprocessOptions } from './preprocess';
export { resizePosEmbed } from './weights/posEmbed';
export { patchMasks, renderMasks, visualize, modelGrid, PATCH_KEPT, PATCH_FUSED, PATCH_DROPPED } from './visualize';
export type { PatchMasks, BlockMask, PatchCounts, RenderOptions, Rendering, VisualizeOptions, Visualization, Rgba } from './visualize';

import { addonInfo, loadBinding, type BackendInfo } from './native';
export type { BackendInfo, AddonInfo } from './native';

/** What the native addon was built with, which addon file is in use, and what it can use on this machine. */
export function backendInfo(): BackendInfo {
  return { ...loadBinding().backendInfo(), addon: addonInfo() };
}
