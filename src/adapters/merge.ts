// Folding LoRA/DoRA into the frozen weights: W' = W + s·B A, or for DoRA
// W' = (m / ‖W + s·B A‖) ⊙ (W + s·B A) row by row. A MixLoRA adapter routes per token and cannot be folded.
import { noGrad } from '../tensor/autograd.js';
import { tidy } from '../tensor/scope.js';
import type { Tensor } from '../tensor/tensor.js';
import type { CausalLM } from '../models/causal-lm.js';
import { writeModelFolder } from '../models/save.js';
import { flattenWeights, projectionPrefix, type ProjName } from '../models/weights.js';
import { quantizationOf } from '../models/frozen-linear.js';
import { UserError } from '../util/errors.js';
import type { Adapter } from './adapter.js';
import type { LoraParams } from './lora.js';

export function mergedWeight(weight: Tensor, p: LoraParams): Tensor {
  return tidy(() =>
    noGrad(() => {
      const w = weight.to('float32').add(p.B.matmul(p.A), p.scale); // [out, in]
      const merged = p.magnitude ? w.mul(p.magnitude.div(w.norm(2, 1)).unsqueeze(1)) : w;
      return merged.to(weight.dtype);
    }),
  );
}

/** The model's tensors by Hugging Face name with the adapter folded in (new tensors for the merged
 * projections, the model's own for the rest; the caller disposes the new ones). */
export function mergeIntoWeights(
  model: CausalLM,
  adapter: Adapter,
): { tensors: Map<string, Tensor>; merged: Tensor[] } {
  if (adapter.isMoe) {
    throw new UserError(
      `${adapter.name}: a MixLoRA adapter cannot be merged into the base weights (its experts are chosen per token); use it with --adapter instead`,
    );
  }
  const quantized = quantizationOf(model.weights);
  if (quantized) {
    throw new UserError(
      `${adapter.name}: cannot merge into a base quantised to ${quantized}: merging writes full-precision weights, and W + s·B A from dequantised codes would carry the quantisation error into every merged weight; load the base without quantisation to merge`,
    );
  }
  const tensors = flattenWeights(model.config, model.weights);
  const merged: Tensor[] = [];
  adapter.layers.forEach((layer, l) => {
    for (const [p, params] of Object.entries(layer.lora) as [ProjName, LoraParams][]) {
      const key = `${projectionPrefix(l, p)}.weight`;
      const w = mergedWeight(tensors.get(key)!, params);
      merged.push(w);
      tensors.set(key, w);
    }
  });
  return { tensors, merged };
}

/** The model with the adapter folded in, written as a Hugging Face folder at `out`. */
export function writeMergedModel(
  loaded: Parameters<typeof writeModelFolder>[0],
  adapter: Adapter,
  out: string,
  opts: { overwrite?: boolean } = {},
): void {
  const { tensors, merged } = mergeIntoWeights(loaded.model, adapter);
  try {
    writeModelFolder(loaded, tensors, out, { overwrite: opts.overwrite, metadata: { merged_adapter: adapter.name } });
  } finally {
    for (const t of merged) t.dispose();
  }
}
