// Gemma 2's decoder block (modeling_gemma2.py, Gemma2DecoderLayer): the attention output is normalised
// before the residual add, and the MLP has a norm before it and one after it:
//   h' = h + norm_post_attn(Attn(norm_in(h))),  out = h' + norm_post_ffn(MLP(norm_pre_ffn(h'))).
// Soft-capping, query_pre_attn_scalar and the alternating sliding window live in the attention itself.
import type { Tensor } from '../tensor/tensor.js';
import type { ForwardHooks } from './hooks.js';
import type { CausalLM, LayerContext } from './causal-lm.js';

export function gemma2Block(m: CausalLM, l: number, h: Tensor, ctx: LayerContext, hooks: ForwardHooks): Tensor {
  const w = m.weights.layers[l]!;
  const ffn = w.ffnNorms!;
  const attn = m.attention(l, m.norm(h, w.inputNorm), ctx, hooks); // [B, T, H]
  const h2 = h.add(m.norm(attn, w.postNorm)); // [B, T, H]
  const mlp = hooks.mlp(l, m.norm(h2, ffn.pre), w, m.config.hiddenAct); // [B, T, H]
  return h2.add(m.norm(mlp, ffn.post)); // [B, T, H]
}
