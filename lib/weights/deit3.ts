/**
 * DeiT III backbones (Touvron et al., "DeiT III: Revenge of the ViT", 2022)
 * differ from DeiT in two ways, both expressible in DeiT's layout, so the
 * native forward pass runs them unchanged (EViT included):
 *
 * - LayerScale: `x + gamma ⊙ proj(attn)` and `x + gamma ⊙ fc2(h)`. Since
 *   gamma ⊙ (W h + b) = (diag(gamma) W) h + gamma ⊙ b, gamma is folded into
 *   the rows of attn.proj and mlp.fc2.
 * - A position embedding with P rows, added to the patches before the class
 *   token is prepended. The class token then gets no position embedding,
 *   which is a class-token row of zeros in DeiT's [1, 1 + P, C] layout.
 *
 * The variant is recognised from tensor names and shapes: `blocks.N.gamma_1` /
 * `gamma_2` (the DeiT III repository) or `blocks.N.ls1.gamma` / `ls2.gamma`
 * (timm), and a pos_embed whose row count is a perfect square.
 */
import { WeightsError } from '../errors';
import type { TensorF32, TensorMap } from './safetensors';

export type Variant = 'deit' | 'deit3';

export interface VariantInfo {
  variant: Variant;
  /** How LayerScale is named in the checkpoint, or null without LayerScale. */
  layerScale: 'gamma_1/gamma_2' | 'ls1.gamma/ls2.gamma' | null;
  /** False when pos_embed has no class-token row (DeiT III). */
  posEmbedClassSlot: boolean;
}

const GAMMA = /^blocks\.(\d+)\.(?:gamma_([12])|ls([12])\.gamma)$/;

function isSquare(n: number): boolean {
  const s = Math.round(Math.sqrt(n));
  return n >= 1 && s * s === n;
}

/** Recognises DeiT III from tensor names and the pos_embed shape. */
export function detectVariant(tensors: TensorMap): VariantInfo {
  let gammaNames = false;
  let lsNames = false;
  for (const name of tensors.keys()) {
    const m = GAMMA.exec(name);
    if (!m) continue;
    if (m[2] !== undefined) gammaNames = true;
    else lsNames = true;
  }
  if (gammaNames && lsNames) throw new WeightsError('checkpoint names LayerScale both as blocks.N.gamma_1/gamma_2 and as blocks.N.ls1.gamma/ls2.gamma');
  const pos = tensors.get('pos_embed');
  // [1, P, C] with P a square grid and 1 + P not: no class-token row.
  const posEmbedClassSlot = !(pos && pos.shape.length === 3 && isSquare(pos.shape[1]!) && !isSquare(pos.shape[1]! - 1));
  const layerScale = gammaNames ? 'gamma_1/gamma_2' : lsNames ? 'ls1.gamma/ls2.gamma' : null;
  return { variant: layerScale !== null || !posEmbedClassSlot ? 'deit3' : 'deit', layerScale, posEmbedClassSlot };
}

/**
 * The same model in DeiT's layout: LayerScale folded into attn.proj and mlp.fc2,
 * the position embedding given a zero class-token row. A DeiT checkpoint is
 * returned as it is. The input tensors are not modified.
 * @throws WeightsError for a LayerScale vector or layer of the wrong shape
 */
export function toDeitLayout(tensors: TensorMap): { tensors: TensorMap; info: VariantInfo } {
  const info = detectVariant(tensors);
  if (info.variant === 'deit') return { tensors, info };
  const out: TensorMap = new Map();
  const folds = new Map<string, TensorF32>(); // layer prefix -> gamma
  for (const [name, t] of tensors) {
    const m = GAMMA.exec(name);
    if (!m) {
      out.set(name, t);
      continue;
    }
    const which = m[2] ?? m[3];
    folds.set(`blocks.${m[1]}.${which === '1' ? 'attn.proj' : 'mlp.fc2'}`, t);
  }
  for (const [layer, gamma] of folds) {
    const w = tensors.get(`${layer}.weight`);
    const b = tensors.get(`${layer}.bias`);
    if (!w || !b) throw new WeightsError(`LayerScale for ${layer} is present but ${layer}.${w ? 'bias' : 'weight'} is missing`);
    const rows = w.shape[0]!;
    if (w.shape.length !== 2 || b.shape.length !== 1 || b.shape[0] !== rows)
      throw new WeightsError(`${layer}.weight ${JSON.stringify(w.shape)} and .bias ${JSON.stringify(b.shape)} are not a linear layer`);
    if (gamma.shape.length !== 1 || gamma.shape[0] !== rows)
      throw new WeightsError(`LayerScale of ${layer} has shape ${JSON.stringify(gamma.shape)}, expected [${rows}] (the layer's output width)`);
    const cols = w.shape[1]!;
    const wf = new Float32Array(rows * cols);
    const bf = new Float32Array(rows);
    for (let r = 0; r < rows; r++) {
      const g = gamma.data[r]!;
      for (let c = 0; c < cols; c++) wf[r * cols + c] = g * w.data[r * cols + c]!;
      bf[r] = g * b.data[r]!;
    }
    out.set(`${layer}.weight`, { shape: w.shape.slice(), data: wf });
    out.set(`${layer}.bias`, { shape: b.shape.slice(), data: bf });
  }
  if (!info.posEmbedClassSlot) {
    const pos = tensors.get('pos_embed')!;
    const [one, rows, c] = pos.shape as [number, number, number];
    const padded = new Float32Array((rows + 1) * c);
    padded.set(pos.data.subarray(0, rows * c), c);
    out.set('pos_embed', { shape: [one, rows + 1, c], data: padded });
  }
  return { tensors: out, info };
}
