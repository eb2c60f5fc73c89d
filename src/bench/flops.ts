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

/** The adapter of a step, as far as its FLOPs go. */
export interface AdapterFlopShape {
  r: number;
  targets: string[];
  /** MixLoRA: experts on the feed-forward projections, top-k of them per token. */
  experts?: { count: number; topK: number };
}

/**
 * FLOPs per token of the adapters' own products: a rank-r LoRA on an in→out projection costs 2r(in + out)
 * forward and twice that backward (the gradients of its input and of A and B); MixLoRA runs top-k
 * experts' LoRAs on each feed-forward projection plus a router of H×E (forward, input and weight
 * gradients). DoRA's per-step weight norms (no gradient) are not counted.
 */
export function adapterFlopsPerToken(p: FlopShape, a: AdapterFlopShape): number {
  const kv = p.kvHeads * (p.hidden / p.heads);
  const dims: Record<string, [number, number]> = {
    q_proj: [p.hidden, p.hidden],
    k_proj: [p.hidden, kv],
    v_proj: [p.hidden, kv],
    o_proj: [p.hidden, p.hidden],
    gate_proj: [p.hidden, p.intermediate],
    up_proj: [p.hidden, p.intermediate],
    down_proj: [p.intermediate, p.hidden],
  };
  const mlp = new Set(['gate_proj', 'up_proj', 'down_proj']);
  let perLayer = 0;
  for (const t of a.targets) {
    const d = dims[t];
    if (!d) continue;
    const lora = 6 * a.r * (d[0] + d[1]);
    perLayer += a.experts && mlp.has(t) ? a.experts.topK * lora : lora;
  }
  if (a.experts) perLayer += 6 * p.hidden * a.experts.count;
  return p.layers * perLayer;
}
