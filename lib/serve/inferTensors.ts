/**
 * Open Inference Protocol v2 (KServe / Triton) request and response bodies for
 * one image classifier: the JSON tensors, Triton's binary tensor data extension
 * (a JSON header followed by raw little-endian tensors, its length in
 * Inference-Header-Content-Length) and its classification extension (top-k as
 * "value:index[:label]" strings).
 *
 * The model takes one of two inputs: `input`, an FP32 tensor [B, C, H, W]
 * already preprocessed, or `image`, a BYTES tensor [B] of encoded images
 * (base64 in JSON, raw bytes in binary). It gives `logits` and `probabilities`,
 * FP32 [B, classes].
 */
import { InputError, OptionsError } from '../errors';
import type { Model, Tensor4D } from '../model';
import { checkJsonDepth, fromBase64, optionalNumber } from './decode';
import { HttpError } from './httpErrors';

export const INPUT_TENSOR = 'input';
export const INPUT_IMAGE = 'image';
export const OUTPUTS = ['logits', 'probabilities'] as const;
export type OutputName = (typeof OUTPUTS)[number];
/** Extensions this server implements, as GET /v2 lists them. */
export const EXTENSIONS = ['binary_tensor_data', 'classification'];

export interface MetadataTensor {
  name: string;
  datatype: string;
  shape: number[];
}

export interface ModelMetadata {
  name: string;
  versions: string[];
  platform: string;
  inputs: MetadataTensor[];
  outputs: MetadataTensor[];
}

export function modelMetadata(model: Model, name: string, version: string): ModelMetadata {
  const { inChans, numClasses } = model.architecture;
  return {
    name,
    versions: [version],
    platform: 'evit',
    inputs: [
      { name: INPUT_TENSOR, datatype: 'FP32', shape: [-1, inChans, model.imgSize, model.imgSize] },
      { name: INPUT_IMAGE, datatype: 'BYTES', shape: [-1] },
    ],
    outputs: OUTPUTS.map((o) => ({ name: o, datatype: 'FP32', shape: [-1, numClasses] })),
  };
}

export interface RequestedOutput {
  name: OutputName;
  /** Return this output as binary data; undefined: as the request's binary_data_output says. */
  binary: boolean | undefined;
  /** Top-k as strings instead of the tensor (classification extension). */
  classification: number | undefined;
}

export type InferInput = { kind: 'tensor'; tensor: Tensor4D } | { kind: 'images'; images: Buffer[] };

export interface InferRequest {
  id: string | undefined;
  keepRate: number | undefined;
  input: InferInput;
  /** The outputs asked for, in order; every output when the request names none. */
  outputs: RequestedOutput[];
  binaryOutput: boolean;
}

type Json = Record<string, unknown>;

const isObject = (v: unknown): v is Json => v !== null && typeof v === 'object' && !Array.isArray(v);

function parameters(where: string, v: unknown): Json {
  if (v === undefined) return {};
  if (!isObject(v)) throw new InputError(`${where}.parameters must be an object`);
  return v;
}

function flag(where: string, v: unknown): boolean | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'boolean') throw new InputError(`${where} must be true or false, got ${JSON.stringify(v)}`);
  return v;
}

/** Tensor data may come nested in the tensor's own dimensions or flat: flattened here, row-major. */
function flatten(data: unknown[], out: unknown[] = []): unknown[] {
  for (const v of data) {
    if (Array.isArray(v)) flatten(v, out);
    else out.push(v);
  }
  return out;
}

const product = (shape: number[]): number => shape.reduce((a, b) => a * b, 1);

/** Splits the body into the JSON request and the binary data after it. */
function splitBody(body: Buffer, headerLength: string | undefined): { json: Json; binary: Buffer } {
  let jsonBytes = body;
  let binary: Buffer = Buffer.alloc(0);
  if (headerLength !== undefined) {
    const n = Number(headerLength);
    if (!/^\d+$/.test(headerLength.trim()) || n < 1 || n > body.length)
      throw new HttpError(400, 'EVIT_BAD_REQUEST', `Inference-Header-Content-Length is ${JSON.stringify(headerLength)}; it must be the JSON header's length, 1..${body.length} bytes`);
    jsonBytes = body.subarray(0, n);
    binary = body.subarray(n);
  }
  if (jsonBytes.length === 0) throw new HttpError(400, 'EVIT_BAD_REQUEST', 'the inference request body is empty');
  const text = jsonBytes.toString('utf8');
  checkJsonDepth(text, 'the inference request');
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new HttpError(400, 'EVIT_BAD_REQUEST', `the inference request is not valid JSON: ${(err as Error).message}`, { cause: err });
  }
  if (!isObject(json)) throw new InputError('the inference request must be a JSON object with "inputs"');
  return { json, binary };
}

/** The BYTES elements of a binary tensor: each a 4-byte little-endian length, then the bytes. */
function bytesElements(where: string, data: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let at = 0;
  while (at < data.length) {
    if (at + 4 > data.length) throw new InputError(`${where}: binary BYTES data ends inside an element's 4-byte length`);
    const n = data.readUInt32LE(at);
    at += 4;
    if (at + n > data.length) throw new InputError(`${where}: a BYTES element claims ${n} bytes, only ${data.length - at} remain`);
    out.push(data.subarray(at, at + n));
    at += n;
  }
  return out;
}

function tensorInput(where: string, model: Model, shape: number[], datatype: unknown, data: unknown, raw: Buffer | null): InferInput {
  const want = [model.architecture.inChans, model.imgSize, model.imgSize];
  if (datatype !== 'FP32') throw new InputError(`${where} "${INPUT_TENSOR}" must have datatype FP32, got ${JSON.stringify(datatype)}`);
  if (shape.length !== 4 || shape[0]! < 1 || want.some((w, i) => shape[i + 1] !== w))
    throw new InputError(`${where} "${INPUT_TENSOR}" has shape [${shape.join(', ')}], expected [batch, ${want.join(', ')}]`);
  const n = product(shape);
  let values: Float32Array;
  if (raw) {
    if (raw.length !== n * 4) throw new InputError(`${where}: binary_data_size is ${raw.length} bytes, shape [${shape.join(', ')}] of FP32 needs ${n * 4}`);
    values = new Float32Array(n);
    // Copied into an aligned buffer: the body's offset need not be a multiple of 4. Both sides are little-endian.
    new Uint8Array(values.buffer).set(raw);
  } else {
    if (!Array.isArray(data)) throw new InputError(`${where} needs "data" (an array of numbers) or parameters.binary_data_size`);
    const flat = flatten(data);
    if (flat.length !== n) throw new InputError(`${where} has ${flat.length} values, shape [${shape.join(', ')}] needs ${n}`);
    values = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      const v = flat[i];
      if (typeof v !== 'number') throw new InputError(`${where}.data[${i}] is ${JSON.stringify(v)}, not a number`);
      values[i] = v;
    }
  }
  return { kind: 'tensor', tensor: { data: values, shape: shape as [number, number, number, number] } };
}

function imageInput(where: string, shape: number[], datatype: unknown, data: unknown, raw: Buffer | null): InferInput {
  if (datatype !== 'BYTES') throw new InputError(`${where} "${INPUT_IMAGE}" must have datatype BYTES, got ${JSON.stringify(datatype)}`);
  if (!(shape.length === 1 || (shape.length === 2 && shape[1] === 1)) || shape[0]! < 1)
    throw new InputError(`${where} "${INPUT_IMAGE}" has shape [${shape.join(', ')}], expected [batch] or [batch, 1]`);
  const n = shape[0]!;
  let images: Buffer[];
  if (raw) {
    images = bytesElements(where, raw);
  } else {
    if (!Array.isArray(data)) throw new InputError(`${where} needs "data" (base64 strings) or parameters.binary_data_size`);
    images = flatten(data).map((v, i) => fromBase64(`${where}.data[${i}]`, v));
  }
  if (images.length !== n) throw new InputError(`${where} holds ${images.length} images, shape [${shape.join(', ')}] says ${n}`);
  images.forEach((img, i) => {
    if (img.length === 0) throw new InputError(`${where}: image ${i} is empty`);
  });
  return { kind: 'images', images };
}

function requestedOutputs(v: unknown, classes: number): RequestedOutput[] {
  if (v === undefined) return OUTPUTS.map((name) => ({ name, binary: undefined, classification: undefined }));
  if (!Array.isArray(v) || v.length === 0) throw new InputError('"outputs" must be a non-empty array of {"name": ...}');
  const seen = new Set<string>();
  return v.map((o, i) => {
    const where = `outputs[${i}]`;
    if (!isObject(o) || typeof o.name !== 'string') throw new InputError(`${where} must be an object with a "name"`);
    if (!(OUTPUTS as readonly string[]).includes(o.name))
      throw new InputError(`${where}: the model has no output ${JSON.stringify(o.name)}; its outputs are ${OUTPUTS.join(', ')}`);
    if (seen.has(o.name)) throw new InputError(`${where}: output ${o.name} is asked for twice`);
    seen.add(o.name);
    const p = parameters(where, o.parameters);
    let classification: number | undefined;
    if (p.classification !== undefined) {
      const k = p.classification;
      if (!Number.isSafeInteger(k) || (k as number) < 1)
        throw new OptionsError(`${where}.parameters.classification must be a positive integer, got ${JSON.stringify(k)}`);
      classification = Math.min(k as number, classes);
    }
    return { name: o.name as OutputName, binary: flag(`${where}.parameters.binary_data`, p.binary_data), classification };
  });
}

/** Reads an inference request; `headerLength` is the Inference-Header-Content-Length header, if any. */
export function parseInferRequest(body: Buffer, headerLength: string | undefined, model: Model): InferRequest {
  const { json, binary } = splitBody(body, headerLength);
  if (json.id !== undefined && typeof json.id !== 'string') throw new InputError('"id" must be a string');
  const params = parameters('request', json.parameters);
  const keepRate = optionalNumber('parameters.keep_rate', params.keep_rate);
  const inputs = json.inputs;
  if (!Array.isArray(inputs) || inputs.length === 0)
    throw new InputError(`"inputs" must be an array holding one input: "${INPUT_TENSOR}" (FP32 [batch, C, H, W]) or "${INPUT_IMAGE}" (BYTES [batch])`);
  if (inputs.length > 1)
    throw new InputError(`the model takes one input, "${INPUT_TENSOR}" or "${INPUT_IMAGE}", got ${inputs.length}`);
  let at = 0;
  const parsed = inputs.map((inp, i): InferInput => {
    const where = `inputs[${i}]`;
    if (!isObject(inp)) throw new InputError(`${where} must be an object`);
    const { name, shape, datatype, data } = inp;
    if (typeof name !== 'string') throw new InputError(`${where} needs a "name"`);
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && (d as number) >= 0))
      throw new InputError(`${where}.shape must be an array of non-negative integers`);
    const p = parameters(where, inp.parameters);
    let raw: Buffer | null = null;
    if (p.binary_data_size !== undefined) {
      const size = p.binary_data_size;
      if (!Number.isSafeInteger(size) || (size as number) < 0)
        throw new InputError(`${where}.parameters.binary_data_size must be a byte count, got ${JSON.stringify(size)}`);
      if (at + (size as number) > binary.length)
        throw new InputError(`${where}: binary_data_size ${String(size)} runs past the ${binary.length} bytes of binary data after the JSON`);
      raw = binary.subarray(at, at + (size as number));
      at += size as number;
      if (data !== undefined) throw new InputError(`${where} has both "data" and parameters.binary_data_size`);
    }
    if (name === INPUT_TENSOR) return tensorInput(where, model, shape as number[], datatype, data, raw);
    if (name === INPUT_IMAGE) return imageInput(where, shape as number[], datatype, data, raw);
    throw new InputError(`${where}: the model has no input ${JSON.stringify(name)}; send "${INPUT_TENSOR}" (FP32) or "${INPUT_IMAGE}" (BYTES)`);
  });
  if (at !== binary.length)
    throw new InputError(`${binary.length - at} bytes of binary data after the JSON belong to no input (binary_data_size)`);
  return {
    id: json.id as string | undefined,
    keepRate,
    input: parsed[0]!,
    outputs: requestedOutputs(json.outputs, model.architecture.numClasses),
    binaryOutput: flag('parameters.binary_data_output', params.binary_data_output) ?? false,
  };
}

/** Softmax of each row, in float64. */
function softmaxRows(logits: number[][]): number[][] {
  return logits.map((row) => {
    const max = Math.max(...row);
    const e = row.map((v) => Math.exp(v - max));
    const sum = e.reduce((a, b) => a + b, 0);
    return e.map((v) => v / sum);
  });
}

/** "value:index[:label]" for the k largest values of each row, largest first, ties to the lower index. */
function classifications(rows: number[][], k: number, labels: readonly string[] | null): string[] {
  const out: string[] = [];
  for (const row of rows) {
    const order = row.map((_, i) => i).sort((a, b) => row[b]! - row[a]! || a - b).slice(0, k);
    for (const i of order) out.push(`${Math.fround(row[i]!)}:${i}${labels?.[i] !== undefined ? `:${labels[i]}` : ''}`);
  }
  return out;
}

function bytesTensor(items: string[]): Buffer {
  const parts: Buffer[] = [];
  for (const s of items) {
    const b = Buffer.from(s, 'utf8');
    const len = Buffer.alloc(4);
    len.writeUInt32LE(b.length);
    parts.push(len, b);
  }
  return Buffer.concat(parts);
}

export interface InferResult {
  logits: number[][];
  keepRate: number | null;
  batchSize: number;
  queueMs: number;
  inferenceMs: number;
}

/** The response: JSON, or (when an output is binary) the JSON header and the binary data to send after it. */
export function inferResponse(req: InferRequest, result: InferResult, modelName: string, version: string, labels: readonly string[] | null):
  { json: Json; binary: Buffer[] } {
  const values: Record<OutputName, () => number[][]> = {
    logits: () => result.logits,
    probabilities: () => softmaxRows(result.logits),
  };
  const batch = result.logits.length;
  const binary: Buffer[] = [];
  const outputs = req.outputs.map((o) => {
    const rows = values[o.name]();
    const asBinary = o.binary ?? req.binaryOutput;
    let datatype: string;
    let shape: number[];
    let data: number[] | string[];
    let bytes: () => Buffer;
    if (o.classification !== undefined) {
      const items = classifications(rows, o.classification, labels);
      datatype = 'BYTES';
      shape = [batch, o.classification];
      data = items;
      bytes = () => bytesTensor(items);
    } else {
      const flat = Float32Array.from(rows.flat());
      datatype = 'FP32';
      shape = [batch, rows[0]?.length ?? 0];
      data = Array.from(flat);
      bytes = () => Buffer.from(flat.buffer, flat.byteOffset, flat.byteLength);
    }
    if (!asBinary) return { name: o.name, datatype, shape, data };
    const b = bytes();
    binary.push(b);
    return { name: o.name, datatype, shape, parameters: { binary_data_size: b.length } };
  });
  const json: Json = {
    model_name: modelName,
    model_version: version,
    ...(req.id !== undefined ? { id: req.id } : {}),
    parameters: {
      keep_rate: result.keepRate ?? 'counts',
      batch_size: result.batchSize,
      queue_ms: result.queueMs,
      inference_ms: result.inferenceMs,
    },
    outputs,
  };
  return { json, binary };
}
