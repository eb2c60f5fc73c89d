// One LoRA or DoRA module on a frozen linear (docs/design.md §3), computed in
// float32 like the reference: y = W x + s·B A dropout(x); DoRA scales W x + s·B A dropout(x) by
// m / ‖W + s·B A‖ (row norms, detached). A bias, if any, is added after the scaling, so merging
// W' = m/‖W + sBA‖ ⊙ (W + sBA) reproduces the adapted layer exactly.
import { isGradEnabled, noGrad } from '../tensor/autograd.js';
import { linear } from '../tensor/ops.js';
import { tidy } from '../tensor/scope.js';
import type { Tensor } from '../tensor/tensor.js';
import { denseWeight } from '../models/frozen-linear.js';
import type { FrozenWeight, Linear } from '../models/weights.js';
import type { LoraSettings } from './config.js';

/** One module's tensors, or (MixLoRA experts) E modules' tensors stacked on a first dimension. */
export interface LoraParams {
  /** [r, in], or [E, r, in] */
  A: Tensor;
  /** [out, r], or [E, out, r] */
  B: Tensor;
  /** [out] or [E, out], DoRA only */
  magnitude: Tensor | null;
  settings: LoraSettings;
  /** α/r, or α/√r with rsLoRA */
  scale: number;
  /** DoRA of a frozen adapter: m / ‖W + s·B A‖ precomputed ([out] or [E, out], float32), so inference
   * skips the weight-sized norm on every forward (frozen.ts). Absent otherwise; never read in training. */
  frozenScale?: Tensor | null;
}

/** ‖W + s·B A‖ per output row, float32 [out], outside autograd (DoRA treats it as a constant). A quantised
 * W is dequantised for this and freed at once (QLoRA's DoRA uses the dequantised weight too). */
export function doraWeightNorm(weight: FrozenWeight, A: Tensor, B: Tensor, scale: number): Tensor {
  return tidy(() => noGrad(() => denseWeight(weight, 'float32').add(B.matmul(A), scale).norm(2, 1))); // [out]
}

/** DoRA's column scale m / ‖W + s·B A‖ for one module, float32 [out]. */
export function doraScale(weight: FrozenWeight, p: LoraParams): Tensor {
  return p.magnitude!.div(doraWeightNorm(weight, p.A, p.B, p.scale)); // [out]
}

/** The precomputed DoRA scale where it may be used: inference, outside autograd (gradients must reach
 * the magnitude and the LoRA weights through the norm's formula). */
export function frozenScale(p: LoraParams, training: boolean): Tensor | null {
  return !training && p.frozenScale && !isGradEnabled() ? p.frozenScale : null;
}

/**
 * DoRA's output from the frozen layer's output `base` = W x + b and the LoRA delta s·B A x, float32:
 * (W x + delta) · m/‖W + s·B A‖ + b. The one place this formula lives in TypeScript (the addon's
 * low_rank_rows.cc has it too, for a bias-free float32 base). base [.., out] (any dtype; the bias comes off
 * in its dtype, as the frozen layer added it); delta float32, broadcastable with base (e.g. [E, .., out]
 * for every expert); scale broadcastable with their sum ([out], or [m, out] per row).
 */
export function doraOutput(base: Tensor, delta: Tensor, scale: Tensor, bias: Tensor | null | undefined): Tensor {
  const wx = (bias ? base.sub(bias.to(base.dtype)) : base).to('float32'); // [.., out]
  const y = wx.add(delta).mul(scale);
  return bias ? y.add(bias.to('float32')) : y;
}

/** B A dropout(x) in float32, x [.., in] -> [.., out], not yet scaled by s. */
function lowRank(x: Tensor, p: LoraParams, training: boolean): Tensor {
  const dropped = x.to('float32').dropout(p.settings.dropout, training); // [.., in]
  return linear(linear(dropped, p.A), p.B); // [.., out]
}

/** s·B A dropout(x) in float32, x [.., in] -> [.., out]. */
export function loraDelta(x: Tensor, p: LoraParams, training: boolean): Tensor {
  return lowRank(x, p, training).mul(p.scale); // [.., out]
}

/** The adapted output for x [.., in], given the frozen layer's output `base` = x Wᵀ + b. */
export function applyLora(x: Tensor, base: Tensor, p: LoraParams, lin: Linear, training: boolean): Tensor {
  // float32 LoRA: base + s·(B A x) in one pass (add with alpha) rather than a scaling pass and an add.
  if (!p.magnitude && base.dtype === 'float32') return base.add(lowRank(x, p, training), p.scale);
  const delta = loraDelta(x, p, training); // [.., out] float32
  if (!p.magnitude) return base.add(delta.to(base.dtype));
  const scale = frozenScale(p, training) ?? doraScale(lin.weight, p); // [out]
  return doraOutput(base, delta, scale, lin.bias).to(base.dtype); // [.., out]
}
