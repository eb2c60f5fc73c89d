// One fused forward and backward pass: the next micro-batch of every running adapter, concatenated as
// row ranges, over the frozen model once. Each adapter's loss (docs/design.md §6.4, §7)
// is its summed cross-entropy divided by the scored tokens of its whole optimizer step, plus its aux
// loss divided by its micro-batches per step; the sum of all adapters' losses is back-propagated (they
// share no parameters, so each gets exactly its own gradients).
//
// An adapter with packing lays its micro-batch's examples into rows of up to cutoff_len tokens, several whole
// examples a row (docs/design.md §6.6): attention stays within each example and positions restart at each, so
// every example, and the micro-batch's pooled aux loss, computes as padded.
//
// With `recompute`, activations are not kept: a no-grad pass stores each decoder layer's input, then
// the layers are re-run one at a time in reverse with the same random state, each back-propagating the
// gradient of its output (and its share of the pooled aux loss). The gradients of a layer's adapter
// parameters are then complete, which lets the optimizer step run layer by layer (afterLayerBackward).
import { backward, noGrad } from '../tensor/autograd.js';
import { tensor } from '../tensor/create.js';
import { sumCrossEntropy } from '../tensor/ops.js';
import { getRngState, setRngState } from '../tensor/runtime.js';
import { tidy } from '../tensor/scope.js';
import type { Tensor } from '../tensor/tensor.js';
import type { CausalLM } from '../models/causal-lm.js';
import type { WeightUnit } from '../models/residency.js';
import type { Adapter } from '../adapters/adapter.js';
import { AdapterBatch, type RowRange } from '../adapters/batch.js';
import { auxLossPart, routingTotals } from '../adapters/aux-loss.js';
import { IGNORE_INDEX, scoredTokens, type Example } from '../data/examples.js';
import { packRows, rowRanges, trainingRows } from '../data/packing.js';
import type { RowSegments } from '../nn/mask.js';

export interface MicroBatch {
  adapter: Adapter;
  examples: Example[];
  /** Scored tokens of the adapter's whole optimizer-step batch (the CE mean's denominator). */
  stepTokens: number;
  /** Micro-batches in the adapter's optimizer step (the aux loss is averaged over them). */
  microBatchesPerStep: number;
  /** packing: the examples go in rows of up to this many tokens, several whole examples a row (absent: one
   * example a row, padded). */
  packTo?: number;
  /** Called once the gradients of the adapter's parameters in decoder layer `layer` are complete for this
   * pass (the optimizer step in the backward pass): with recompute, right after that layer's backward, so
   * they can be applied and freed before the layers below run; otherwise after the whole backward. */
  afterLayerBackward?: (layer: number) => void;
}

export interface MicroResult {
  ce: number;
  aux: number | null;
  scoredTokens: number;
  inputTokens: number;
}

/** What a pass returns per micro-batch, in order. */
interface PassLosses {
  ce: number[];
  aux: (number | null)[];
}

interface HeadBackward {
  /** Gradient of the last hidden states [B, T, H]. */
  grad: Tensor;
  ce: number[];
}

interface Packed {
  ids: Tensor;
  targets: Tensor;
  mask: Tensor | null;
  /** Where the examples are when rows hold several (null: one example a row). */
  segments: RowSegments | null;
  ranges: RowRange[];
}

/** The rows of one micro-batch: one example each, or (packTo) whole examples packed with the least padding. */
function microBatchRows(m: MicroBatch): Example[][] {
  if (m.packTo === undefined) return m.examples.map((e) => [e]);
  return packRows(
    m.examples.map((e) => e.inputIds.length),
    m.packTo,
  ).map((row) => row.map((i) => m.examples[i]!));
}

function pack(microBatches: MicroBatch[], device: CausalLM['device'], padId: number): Packed {
  const perMicroBatch = microBatches.map(microBatchRows);
  const { ids, targets, mask, segments } = trainingRows(perMicroBatch.flat(), padId, device);
  return {
    ids,
    targets,
    mask,
    segments,
    ranges: rowRanges(perMicroBatch.map((rows) => rows.length)).map((range, i) => ({
      ...range,
      adapter: microBatches[i]!.adapter,
    })),
  };
}

/** Logit rows per chunk: about 8M floats, so the full [tokens, vocab] logits never exist at once. */
function chunkRows(vocab: number): number {
  return Math.max(16, Math.floor(2_097_152 / vocab));
}

/**
 * The head's part of the backward pass, chunk by chunk: the final norm and the LM head run only on the
 * scored positions of each range (prompts and padding need no logits), each chunk's CE (summed, divided
 * by the range's step tokens) is back-propagated at once, and the gradient of the last hidden states
 * is returned for the layers (the head's weights are frozen), with each micro-batch's CE. The head's weights
 * are in place for the whole of it (a sharded base gathers them once, not per chunk).
 */
function headBackward(model: CausalLM, last: Tensor, p: Packed, microBatches: MicroBatch[]): HeadBackward {
  return model.withWeights('head', () => chunkedHeadBackward(model, last, p, microBatches));
}

function chunkedHeadBackward(model: CausalLM, last: Tensor, p: Packed, microBatches: MicroBatch[]): HeadBackward {
  const H = last.size(-1);
  const hd = last.detach().requiresGrad_(); // [B, T, H]
  const flat = hd.reshape(-1, H); // [B·T, H]
  const T = last.size(1);
  const targets = p.targets.reshape(-1).toNumbers();
  const chunk = chunkRows(model.config.vocabSize);
  // A bfloat16 head under float32 compute is widened once for all chunks, not once per chunk and direction.
  const lmHead = model.headWeight(); // [V, H]
  const ce = microBatches.map((m, i) => {
    const range = p.ranges[i]!;
    const scored: number[] = [];
    for (let k = range.start * T; k < (range.start + range.count) * T; k++)
      if (targets[k] !== IGNORE_INDEX) scored.push(k);
    let sum = 0;
    for (let c = 0; c < scored.length; c += chunk) {
      tidy(() => {
        const idx = tensor(scored.slice(c, c + chunk), { dtype: 'int64', device: model.device });
        const logits = model.head(flat.indexSelect(0, idx), lmHead); // [n, V]
        const loss = sumCrossEntropy(logits, p.targets.reshape(-1).indexSelect(0, idx)).div(m.stepTokens);
        sum += loss.item();
        loss.backward();
      });
    }
    return sum;
  });
  if (lmHead !== model.weights.lmHead) lmHead.dispose();
  return { grad: hd.grad ?? hd.zerosLike(), ce };
}

/** The units of frozen weights recomputingPass uses, in order: the embeddings, each layer forward, the head, each
 * layer again backward. A sharded base gathers each next one while the current one computes. */
export function recomputeOrder(L: number): WeightUnit[] {
  const forward = Array.from({ length: L }, (_, l) => l);
  return ['embed', ...forward, 'head', ...forward.reverse()];
}

/** What a rank with no micro-batch in a step's slot does under a sharded base (which needs recompute): it takes
 * part in the all-gathers of recomputingPass, in its order, without computing. */
export function idlePass(model: CausalLM): void {
  if (!model.residency) return;
  const order = recomputeOrder(model.config.numLayers);
  model.residency.expect(order);
  for (const unit of order) model.withWeights(unit, () => undefined);
}

export function fusedStep(
  model: CausalLM,
  microBatches: MicroBatch[],
  opts: { recompute: boolean; padId: number },
): MicroResult[] {
  return tidy(() => {
    const p = pack(microBatches, model.device, opts.padId);
    const losses = opts.recompute ? recomputingPass(model, microBatches, p) : plainPass(model, microBatches, p);
    return microBatches.map((m, i) => ({
      ce: losses.ce[i]!,
      aux: losses.aux[i]!,
      scoredTokens: m.examples.reduce((n, e) => n + scoredTokens(e), 0),
      inputTokens: m.examples.reduce((n, e) => n + e.inputIds.length, 0),
    }));
  });
}

function plainPass(model: CausalLM, microBatches: MicroBatch[], p: Packed): PassLosses {
  const batch = new AdapterBatch(p.ranges, { training: true });
  try {
    const last = model.lastHidden(p.ids, { attentionMask: p.mask, hooks: batch, packed: p.segments }); // [B, T, H]
    const head = headBackward(model, last, p, microBatches);
    const roots: Tensor[] = [last];
    const grads: (Tensor | null)[] = [head.grad];
    const aux = microBatches.map((m) => {
      const moe = m.adapter.config.moe;
      if (!moe) return null;
      const records = batch.routing.get(m.adapter) ?? [];
      const loss = auxLossPart(records, moe, routingTotals(records, moe.numExperts));
      if (!loss) return null;
      const value = loss.item();
      roots.push(loss.div(m.microBatchesPerStep));
      grads.push(null);
      return value;
    });
    backward(roots, grads);
    for (let l = model.config.numLayers - 1; l >= 0; l--) for (const m of microBatches) m.afterLayerBackward?.(l);
    return { ce: head.ce, aux };
  } finally {
    batch.dispose();
  }
}

function recomputingPass(model: CausalLM, microBatches: MicroBatch[], p: Packed): PassLosses {
  const L = model.config.numLayers;
  model.residency?.expect(recomputeOrder(L));
  const ctx = model.context(p.ids, p.mask, null, null, p.segments);
  const tokenMask = p.mask;
  // Pass 1, no gradients: each layer's input and random state, and the routing totals per adapter.
  const counting = new AdapterBatch(p.ranges, { training: true, record: 'counts' });
  counting.beginForward(tokenMask, p.segments);
  const inputs: Tensor[] = [];
  const rng: Tensor[] = [];
  noGrad(() => {
    let h = model.embed(p.ids).keep(); // [B, T, H]
    for (let l = 0; l < L; l++) {
      inputs.push(h);
      rng.push(getRngState().keep());
      const prev = h;
      h = tidy(() => model.layer(l, prev, ctx, counting).keep());
    }
    inputs.push(h);
  });
  const endState = getRngState().keep();
  const realTokens = (range: RowRange) =>
    tokenMask ? tokenMask.narrow(0, range.start, range.count).sum().item() : range.count * p.ids.size(1);
  const totals = microBatches.map((m, i) => {
    const moe = m.adapter.config.moe;
    if (!moe) return null;
    const perLayer = counting.expertCounts.get(m.adapter) ?? [];
    const counts = Array.from({ length: moe.numExperts }, (_, e) => perLayer.reduce((s, layer) => s + layer[e]!, 0));
    return { counts, n: realTokens(p.ranges[i]!) * L };
  });
  counting.dispose();
  try {
    // The head: CE of every adapter, back to the last layer's output.
    const head = tidy(() => {
      const h = headBackward(model, inputs[L]!, p, microBatches);
      h.grad.keep();
      return h;
    });
    let grad = head.grad;
    const aux: (number | null)[] = microBatches.map(() => null);
    // Each layer again, last to first, with the random state it had.
    for (let l = L - 1; l >= 0; l--) {
      setRngState(rng[l]!);
      const upstream = grad;
      grad = tidy(() => {
        const hin = inputs[l]!.detach().requiresGrad_();
        const batch = new AdapterBatch(p.ranges, { training: true });
        batch.beginForward(tokenMask, p.segments);
        try {
          const out = model.layer(l, hin, ctx, batch); // [B, T, H]
          let surrogate = out.mul(upstream).sum();
          microBatches.forEach((m, i) => {
            const moe = m.adapter.config.moe;
            const loss = moe ? auxLossPart(batch.routing.get(m.adapter) ?? [], moe, totals[i]!) : null;
            if (loss) {
              aux[i] = (aux[i] ?? 0) + loss.item();
              surrogate = surrogate.add(loss.div(m.microBatchesPerStep));
            }
          });
          surrogate.backward();
          return hin.grad ? hin.grad.keep() : hin.zerosLike().keep();
        } finally {
          batch.dispose();
        }
      });
      upstream.dispose();
      for (const m of microBatches) m.afterLayerBackward?.(l);
    }
    grad.dispose();
    return { ce: head.ce, aux };
  } finally {
    // Leave the generator where a plain pass would: both modes then train identically.
    setRngState(endState);
    endState.dispose();
    for (const t of [...inputs, ...rng]) t.dispose();
  }
}
