// Routing tokens to experts (docs/design.md §5). Every strategy returns the
// chosen (token, expert, weight) slots as flat lists; the weights carry the router's gradient.
import { arange, ones } from '../tensor/create.js';
import { bincount } from '../tensor/ops.js';
import type { Tensor } from '../tensor/tensor.js';
import type { MoeSettings } from './config.js';

export interface Routing {
  /** [m] int64: row of x for each slot */
  tokens: Tensor;
  /** [m] int64 */
  experts: Tensor;
  /** [m] float32 */
  weights: Tensor;
  /** [E] int64: how often each expert was chosen (before any capacity limit); load statistics and aux loss */
  counts: Tensor;
}

/** What a MixLoRA router produced over a batch's real tokens: what the aux and z losses and the load
 * statistics read, whichever path (sparse, dense, stacked) ran the block. */
export interface RouterOutput {
  /** Router logits of the real tokens [nv, E], float32 (aux and z losses). */
  logits: Tensor;
  /** softmax of the logits [nv, E] (aux loss). */
  probs: Tensor;
  /** [E] int64: experts chosen among real tokens (load statistics, aux loss). */
  counts: Tensor;
}

/** softmax, keep the k largest, renormalise them to sum to 1. probs [n, E]. */
export function topKRouting(probs: Tensor, k: number): Routing {
  const n = probs.size(0);
  const E = probs.size(1);
  const { values, indices } = probs.topk(k, -1); // [n, k]
  const weights = values.div(values.sum(-1, true)); // [n, k]
  const experts = indices.flatten(); // [n·k]
  return {
    tokens: arange(0, n, 1, { device: probs.device }).repeatInterleave(k, 0), // [n·k]
    experts,
    weights: weights.flatten(),
    counts: bincount(experts, E),
  };
}

/** Top-p: experts in descending probability until the running sum first exceeds p (that one
 * included); weights are the probabilities, not renormalised. */
export function dynamicRouting(probs: Tensor, topP: number): Routing {
  const n = probs.size(0);
  const E = probs.size(1);
  const { values, indices } = probs.sort(-1, true); // [n, E] descending
  const before = values.cumsum(-1).sub(values); // exclusive running sum
  const keep = before.le(topP); // [n, E]
  const rows = arange(0, n, 1, { device: probs.device }).unsqueeze(1).expand(n, E);
  const experts = indices.maskedSelect(keep); // [m]
  return { tokens: rows.maskedSelect(keep), experts, weights: values.maskedSelect(keep), counts: bincount(experts, E) };
}

/** Switch: the top-1 expert with its probability as weight. An expert takes at most `capacity`
 * tokens of each sequence (in order); later tokens skip the experts (residual only). x rows are
 * `rows` sequences of `len` tokens; `valid` [rows·len] marks real tokens, which alone use capacity. With
 * `positions` [rows·len] (rows that pack several examples), each example is a sequence: its capacity count
 * starts at its first token (position 0). */
export function switchRouting(
  probs: Tensor,
  capacity: number,
  rows: number,
  len: number,
  valid: Tensor | null,
  positions: Tensor | null = null,
): Routing {
  const n = probs.size(0);
  const E = probs.size(1);
  const { values, indices } = probs.max(-1); // [n]
  const real = valid ?? ones([n], { dtype: 'bool', device: probs.device });
  const routed = indices.oneHot(E).mul(real.unsqueeze(1).to('int64')); // [n, E]
  let seen = routed.reshape(rows, len, E).cumsum(1).reshape(n, E); // [n, E] routed so far in the row, inclusive
  if (positions) {
    // minus what the row routed before the token's example began (at flat index token - position)
    const start = arange(0, n, 1, { device: probs.device }).sub(positions); // [n]
    seen = seen.sub(seen.indexSelect(0, start).sub(routed.indexSelect(0, start))); // [n, E]
  }
  const priority = seen.gather(1, indices.unsqueeze(1)).squeeze(1); // [n]
  const keep = priority.le(capacity).logicalAnd(real); // [n]
  const tokens = keep.nonzero().squeeze(1); // [m]
  return {
    tokens,
    experts: indices.indexSelect(0, tokens),
    weights: values.indexSelect(0, tokens),
    counts: bincount(indices.maskedSelect(real), E),
  };
}

/** Drops the slots of padding rows (valid [n] bool), recounting the experts. */
function realSlots(routing: Routing, valid: Tensor | null, E: number): Routing {
  if (valid === null) return routing;
  const keep = valid.indexSelect(0, routing.tokens); // [m]
  const experts = routing.experts.maskedSelect(keep);
  return {
    tokens: routing.tokens.maskedSelect(keep),
    experts,
    weights: routing.weights.maskedSelect(keep),
    counts: bincount(experts, E),
  };
}

/** Routes the rows of probs [n, E] (n = rows·len tokens); padding rows (valid false) get no expert. */
export function route(
  probs: Tensor,
  m: MoeSettings,
  seq: { rows: number; len: number; valid: Tensor | null; positions?: Tensor | null },
): Routing {
  const E = probs.size(1);
  switch (m.routingStrategy) {
    case 'mixlora':
      return realSlots(topKRouting(probs, m.topK), seq.valid, E);
    case 'mixlora-dynamic':
      return realSlots(dynamicRouting(probs, m.topP), seq.valid, E);
    case 'mixlora-switch':
      return switchRouting(probs, m.expertCapacity, seq.rows, seq.len, seq.valid, seq.positions ?? null);
  }
}
