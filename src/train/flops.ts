// Model FLOPs of a training step with a frozen base model, for model FLOPs utilisation (MFU).
// Convention (PaLM, Chowdhery et al. 2022, appendix B, with the weight gradients of the frozen base
// removed): per token, a weight matrix of N entries costs 2N in the forward pass and 2N more for the
// gradient of its input in the backward pass (no gradient of the weight itself); attention scores and
// values cost 4·h·T per layer forward and twice that backward (T = sequence length, counted in full as in
// PaLM). Embedding lookups, norms, the adapters' own products and recomputation are not counted, so the
// figure is the useful work of the base model that every method shares.

export interface FlopShape {
  vocab: number;
  hidden: number;
  intermediate: number;
  layers: number;
  heads: number;
  kvHeads: number;
}

/** Entries of the weight matrices a token is multiplied by: every layer's projections and the lm_head. */
export function matmulWeights(p: FlopShape): number {
  const kv = p.kvHeads * (p.hidden / p.heads);
  const perLayer = 2 * p.hidden * p.hidden + 2 * p.hidden * kv + 3 * p.hidden * p.intermediate; // q,o + k,v + MLP
  return p.layers * perLayer + p.hidden * p.vocab;
}

/** Model FLOPs per trained token of a step over rows of `seq` tokens. */
export function trainFlopsPerToken(p: FlopShape, seq: number): number {
  const weights = matmulWeights(p);
  const attention = 4 * p.hidden * seq * p.layers; // forward QKᵀ and AV
  return 2 * (2 * weights) + 3 * attention;
}
