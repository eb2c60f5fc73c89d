// The frozen projections, whether their weights are tensors or quantised (src/quant): the one place
// that tells the two apart, so hooks, adapters and merging need not.
import { noGrad } from '../tensor/autograd.js';
import { linear } from '../tensor/ops.js';
import { ITEM_SIZE, type DType } from '../tensor/dtype.js';
import type { Tensor } from '../tensor/tensor.js';
import { QuantizedWeight } from '../quant/quantized-weight.js';
import type { QuantFormat } from '../quant/format.js';
import type { FrozenWeight, Linear, ModelWeights } from './weights.js';

/** x Wᵀ + b for x [.., in] -> [.., out]. A quantised W is dequantised for this product only (and again
 * for the input gradient), in x's dtype. */
export function frozenLinear(x: Tensor, lin: Linear): Tensor {
  if (!(lin.weight instanceof QuantizedWeight)) return linear(x, lin.weight, lin.bias);
  const y = lin.weight.linear(x); // [.., out]
  return lin.bias ? y.add(lin.bias) : y;
}

/** The weight [out, in] as a tensor in `dtype`: the weight itself (converted if needed), or dequantised.
 * A new tensor (when it is one) belongs to the current scope: call inside tidy and let it go. */
export function denseWeight(w: FrozenWeight, dtype: DType): Tensor {
  return noGrad(() => (w instanceof QuantizedWeight ? w.dequantize(dtype) : w.to(dtype)));
}

/** The quantisation of a model's projections, or null when they are tensors. */
export function quantizationOf(w: ModelWeights): QuantFormat | null {
  const first = Object.values(w.layers[0]?.proj ?? {})[0]?.weight;
  return first instanceof QuantizedWeight ? first.format : null;
}

/** Bytes held by the frozen weights (tied tensors once; a quantised weight: its codes and scales). */
export function residentBytes(w: ModelWeights): number {
  const seen = new Set<FrozenWeight>();
  let bytes = 0;
  const count = (t: FrozenWeight | null) => {
    if (!t || seen.has(t)) return;
    seen.add(t);
    bytes += t instanceof QuantizedWeight ? t.bytes : t.numel * ITEM_SIZE[t.dtype];
  };
  count(w.embed);
  count(w.norm);
  count(w.lmHead);
  for (const l of w.layers) {
    count(l.inputNorm);
    count(l.postNorm);
    count(l.ffnNorms?.pre ?? null);
    count(l.ffnNorms?.post ?? null);
    for (const lin of Object.values(l.proj)) {
      count(lin.weight);
      count(lin.bias);
    }
  }
  return bytes;
}
