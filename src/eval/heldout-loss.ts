// Cross-entropy of held-out examples (the training shapes, tokenised as in training) for several
// adapters in the same fused batches: rows of every adapter side by side as row ranges over the frozen
// model, as `mixlora eval` batches them. The loss is the token mean over the scored tokens, as the
// training loss of an optimizer step is.
import { tensor } from '../tensor/create.js';
import { crossEntropy } from '../tensor/ops.js';
import { noGrad } from '../tensor/autograd.js';
import { tidy } from '../tensor/scope.js';
import type { CausalLM } from '../models/causal-lm.js';
import type { Adapter } from '../adapters/adapter.js';
import { AdapterBatch, type RowRange } from '../adapters/batch.js';
import { IGNORE_INDEX, type Example } from '../data/examples.js';

export interface LossTarget {
  adapter: Adapter | null;
  examples: Example[];
}

/** Logit rows per chunk (the [tokens, vocab] logits never exist at once). */
const chunkRows = (vocab: number) => Math.max(16, Math.floor(2_097_152 / vocab));

/** Mean CE per target over its scored tokens (null when it has none). */
export function heldOutLoss(
  model: CausalLM,
  targets: LossTarget[],
  opts: { batchSize: number; padId: number },
): (number | null)[] {
  const rows = targets.flatMap((t, ti) => t.examples.map((e) => ({ ti, e })));
  const sums = targets.map(() => 0);
  const counts = targets.map(() => 0);
  for (let s = 0; s < rows.length; s += opts.batchSize) {
    const batch = rows.slice(s, s + opts.batchSize);
    const T = Math.max(...batch.map((item) => item.e.inputIds.length));
    const ranges: RowRange[] = [];
    batch.forEach((item, i) => {
      const last = ranges[ranges.length - 1];
      if (last && batch[i - 1]!.ti === item.ti) last.count++;
      else ranges.push({ start: i, count: 1, adapter: targets[item.ti]!.adapter });
    });
    // Targets shifted: position t predicts token t + 1.
    const shifted = batch.map((item) =>
      Array.from({ length: T }, (_, t) => (t + 1 < item.e.labels.length ? item.e.labels[t + 1]! : IGNORE_INDEX)),
    );
    const padded = batch.some((item) => item.e.inputIds.length !== T);
    noGrad(() =>
      tidy(() => {
        const hooks = new AdapterBatch(ranges, { training: false });
        try {
          const ids = tensor(
            batch.map((item) => [...item.e.inputIds, ...Array<number>(T - item.e.inputIds.length).fill(opts.padId)]),
            { dtype: 'int64', device: model.device },
          ); // [B, T]
          const mask = padded
            ? tensor(
                batch.map((item) => Array.from({ length: T }, (_, t) => (t < item.e.inputIds.length ? 1 : 0))),
                { dtype: 'int64', device: model.device },
              )
            : null; // [B, T]
          const h = model.lastHidden(ids, { attentionMask: mask, hooks }); // [B, T, H]
          const flat = h.reshape(-1, h.size(-1)); // [B·T, H]
          const positions: number[] = [];
          const owner: number[] = [];
          shifted.forEach((row, b) =>
            row.forEach((y, t) => {
              if (y !== IGNORE_INDEX) {
                positions.push(b * T + t);
                owner.push(batch[b]!.ti);
              }
            }),
          );
          const labels = shifted.flat().filter((y) => y !== IGNORE_INDEX);
          const chunk = chunkRows(model.config.vocabSize);
          // One use of the head's weights for every chunk (a sharded base gathers them once).
          model.withWeights('head', () => {
            const lmHead = model.headWeight(); // [V, H], widened once for every chunk where stored narrower
            for (let c = 0; c < positions.length; c += chunk) {
              tidy(() => {
                const idx = tensor(positions.slice(c, c + chunk), { dtype: 'int64', device: model.device });
                const y = tensor(labels.slice(c, c + chunk), { dtype: 'int64', device: model.device });
                const logits = model.head(flat.indexSelect(0, idx), lmHead); // [n, V]
                const ce = crossEntropy(logits, y, { reduction: 'none' }).toNumbers(); // [n]
                ce.forEach((v, k) => {
                  sums[owner[c + k]!]! += v;
                  counts[owner[c + k]!]!++;
                });
              });
            }
          });
        } finally {
          hooks.dispose();
        }
      }),
    );
  }
  return sums.map((s, i) => (counts[i]! > 0 ? s / counts[i]! : null));
}
