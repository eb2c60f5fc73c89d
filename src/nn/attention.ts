// Attention over rotated queries and keys: libtorch's fused kernel when the scores need nothing special,
// the eager computation (as transformers' eager_attention_forward) when Gemma 2 soft-caps them.
import { arange } from '../tensor/create.js';
import { scaledDotProductAttention } from '../tensor/ops.js';
import type { Tensor } from '../tensor/tensor.js';

export interface AttentionOptions {
  /** bool [B, 1, T, S], true = attend; null: all keys, or causal. */
  mask: Tensor | null;
  causal: boolean;
  /** Scores are q·k times this. */
  scale: number;
  /** tanh(s / cap) · cap on the scores before the mask (Gemma 2's attn_logit_softcapping); null: none. */
  softcap: number | null;
}

/** softmax(q kᵀ · scale [soft-capped] + mask) v for q [B, nH, T, D], k and v [B, nH, S, D] -> [B, nH, T, D]. */
export function attend(q: Tensor, k: Tensor, v: Tensor, o: AttentionOptions): Tensor {
  const D = q.size(-1);
  if (o.softcap === null) {
    // The fused kernel scales by D^-0.5; another scale (Gemma 2's query_pre_attn_scalar) goes into q.
    const extra = o.scale * Math.sqrt(D);
    const qs = Math.abs(extra - 1) < 1e-12 ? q : q.mul(extra); // [B, nH, T, D]
    return scaledDotProductAttention(qs, k, v, { mask: o.mask, causal: o.causal });
  }
  const [T, S] = [q.size(2), k.size(2)];
  const scores = q.matmul(k.transpose(-1, -2)).mul(o.scale).div(o.softcap).tanh().mul(o.softcap); // [B, nH, T, S]
  const allowed = o.mask ?? (o.causal ? causalMask(T, S, q.device) : null); // [.., T, S]
  const masked = allowed ? scores.maskedFill(allowed.logicalNot(), -Infinity) : scores;
  return masked.softmax(-1, 'float32').to(q.dtype).matmul(v); // [B, nH, T, D]
}

/** bool [T, S]: query t (the last T of S positions) sees keys up to itself. */
function causalMask(T: number, S: number, device: Tensor['device']): Tensor {
  const q = arange(S - T, S, 1, { device }).unsqueeze(1); // [T, 1]
  const k = arange(0, S, 1, { device }).unsqueeze(0); // [1, S]
  return k.le(q); // [T, S]
}
