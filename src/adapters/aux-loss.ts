// The load-balance loss of a MixLoRA adapter (docs/design.md §6.2-6.3): router outputs
// of all layers pooled (N = layers × real tokens), F[e] = share of routed slots that went to e,
// P[e] = mean router probability of e, aux = coef · E · Σ_e F[e]·P[e] (uniform routing: coef · k).
// Σ_k F[k,e] of the reference is the count of e over all k choices divided by N, which is what the
// counts give. mixlora-switch adds the router z-loss, z_coef · mean(logsumexp(logits)²).
import { tensor } from '../tensor/create.js';
import type { Tensor } from '../tensor/tensor.js';
import type { MoeSettings } from './config.js';
import type { RouterRecord } from './batch.js';

/** Sum of the records' expert counts [E] and their real-token total N, as plain numbers. */
export function routingTotals(records: RouterRecord[], experts: number): { counts: number[]; n: number } {
  const counts = Array<number>(experts).fill(0);
  let n = 0;
  for (const record of records) {
    record.counts.toNumbers().forEach((c, e) => {
      counts[e]! += c;
    });
    n += record.probs.size(0);
  }
  return { counts, n };
}

/** The loss from some of the records (with gradient through their probabilities and logits), given
 * totals over all records of the pass. Summing it over disjoint record sets gives the pooled loss, so
 * layer-by-layer recomputation can add each layer's share. */
export function auxLossPart(
  records: RouterRecord[],
  m: MoeSettings,
  totals: { counts: number[]; n: number },
): Tensor | null {
  if (!m.routerLoss || totals.n === 0 || records.length === 0) return null;
  const E = m.numExperts;
  const fraction = totals.counts.map((c) => c / totals.n); // F[e]
  let loss: Tensor | null = null;
  for (const record of records) {
    const probSum = record.probs.sum(0); // [E]
    const f = tensor(fraction, { device: probSum.device }); // [E]
    let part = probSum
      .mul(f)
      .sum()
      .mul((m.routerAuxLossCoef * E) / totals.n);
    if (m.routingStrategy === 'mixlora-switch' && m.routerZLossCoef > 0) {
      part = part.add(
        record.logits
          .logsumexp(-1)
          .square()
          .sum()
          .mul(m.routerZLossCoef / totals.n),
      );
    }
    loss = loss ? loss.add(part) : part;
  }
  return loss;
}

export function auxLoss(records: RouterRecord[], m: MoeSettings): Tensor | null {
  return auxLossPart(records, m, routingTotals(records, m.numExperts));
}
