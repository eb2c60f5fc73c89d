// What Gemma and Gemma 2 do differently outside the decoder block (modeling_gemma.py): RMSNorm weights
// apply as (1 + w) in float32, and token embeddings are multiplied by √hidden_size rounded to the
// embeddings' dtype (GemmaTextScaledWordEmbedding casts its float32 scale to the weight's dtype).
import { tensor } from '../tensor/create.js';
import type { DType } from '../tensor/dtype.js';
import type { Tensor } from '../tensor/tensor.js';
import { rmsNorm, rmsNormPlusOne } from '../nn/norm.js';
import type { ModelConfig } from './config.js';

export function isGemma(c: ModelConfig): boolean {
  return c.architecture === 'gemma' || c.architecture === 'gemma2';
}

/** The model's RMSNorm: x [.., H], w [H]. */
export function normFor(c: ModelConfig): (x: Tensor, w: Tensor, eps: number) => Tensor {
  return isGemma(c) ? rmsNormPlusOne : rmsNorm;
}

/** Embeddings e [B, T, H] times √H rounded to the weights' dtype (`weights`: e's unless the model computes in
 * a wider dtype than it stores), multiplied in e's dtype (Gemma); others unchanged. */
export function scaleEmbeddings(e: Tensor, c: ModelConfig, weights: DType = e.dtype): Tensor {
  if (!isGemma(c)) return e;
  const scale = tensor([Math.sqrt(c.hiddenSize)], { dtype: 'float32', device: e.device })
    .to(weights)
    .to(e.dtype); // [1]
  return e.mul(scale); // [B, T, H]
}
