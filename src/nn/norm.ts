// RMSNorm as LLaMA uses it (normalise in float32, cast back, then scale) and as Gemma does (scale by 1 + w,
// all in float32, then cast back).
import type { Tensor } from '../tensor/tensor.js';

/** x · rsqrt(mean(x²) + eps) · w, over the last dim; x [.., H], w [H]. */
export function rmsNorm(x: Tensor, weight: Tensor, eps: number): Tensor {
  const x32 = x.to('float32');
  const normed = x32.mul(x32.square().mean(-1, true).add(eps).rsqrt()); // [.., H] float32
  return weight.mul(normed.to(x.dtype));
}

/** Gemma's RMSNorm: x · rsqrt(mean(x²) + eps) · (1 + w) in float32, cast back to x's dtype (modeling_gemma.py,
 * GemmaRMSNorm; its checkpoints store w with the 1 taken out). x [.., H], w [H]. */
export function rmsNormPlusOne(x: Tensor, weight: Tensor, eps: number): Tensor {
  const x32 = x.to('float32');
  const normed = x32.mul(x32.square().mean(-1, true).add(eps).rsqrt()); // [.., H] float32
  return normed.mul(weight.to('float32').add(1)).to(x.dtype);
}
