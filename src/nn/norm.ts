// RMSNorm as LLaMA uses it: normalise in float32, cast back, then scale.
import type { Tensor } from '../tensor/tensor.js';

/** x · rsqrt(mean(x²) + eps) · w, over the last dim; x [.., H], w [H]. */
export function rmsNorm(x: Tensor, weight: Tensor, eps: number): Tensor {
  const x32 = x.to('float32');
  const normed = x32.mul(x32.square().mean(-1, true).add(eps).rsqrt()); // [.., H] float32
  return weight.mul(normed.to(x.dtype));
}
