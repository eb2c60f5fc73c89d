// The MixLoRA block that replaces the feed-forward block for an adapter's rows: a float32 router picks
// experts per token; expert e is the frozen SwiGLU FFN with its own LoRA/DoRA on each targeted
// projection; the output is Σ weight·expert(x) (docs/design.md §4).
//
// Two ways to compute the experts, equal up to rounding:
//  - efficient (paper §3.5): the frozen gate/up projections are computed once per token (shared by
//    every adapter of the batch), each expert adds only its LoRA delta on the rows routed to it; and,
//    since Σₑ wₑ·W hₑ = W (Σₑ wₑ hₑ), the frozen down projection also runs once per token, on the
//    routing-weighted sum of the experts' hidden states (not with DoRA experts on down_proj, whose
//    per-expert column scaling breaks the linearity, nor with a down_proj bias);
//  - per expert (the reference's plain path): each expert runs the whole FFN on its rows.
import { zeros, rand } from '../tensor/create.js';
import { bincount, cat, linear, swiglu } from '../tensor/ops.js';
import { frozenLinear } from '../models/frozen-linear.js';
import type { Tensor } from '../tensor/tensor.js';
import type { LayerWeights, Linear } from '../models/weights.js';
import { applyLora, loraDelta } from './lora.js';
import { expertParams, type MlpProj, type MoeLayer } from './params.js';
import { route } from './routing.js';

export interface MoeInput {
  /** Hidden states of the adapter's rows, flattened: [n, H] (n = rows·len). */
  x: Tensor;
  rows: number;
  len: number;
  /** [n] bool: real tokens (padding gets no expert and counts for nothing); null: all real. */
  valid: Tensor | null;
  /** The frozen gate/up projections of x, [n, I] each, when already computed (efficient path). */
  base: { gate: Tensor; up: Tensor } | null;
  training: boolean;
  efficient: boolean;
}

export interface MoeOutput {
  /** [n, H] in x's dtype */
  out: Tensor;
  /** Router logits of the real tokens [nv, E], float32 (aux and z losses). */
  logits: Tensor;
  /** softmax of the logits [nv, E] (aux loss). */
  probs: Tensor;
  /** [E] int64: experts chosen among real tokens (load statistics, aux loss). */
  counts: Tensor;
}

function project(
  name: MlpProj,
  layer: MoeLayer,
  e: number,
  x: Tensor,
  base: Tensor,
  lin: Linear,
  training: boolean,
): Tensor {
  const stacked = layer.experts[name];
  return stacked ? applyLora(x, base, expertParams(stacked, e), lin, training) : base;
}

export function moeForward(layer: MoeLayer, w: LayerWeights, input: MoeInput): MoeOutput {
  const m = layer.settings;
  const { rows, len, valid, training } = input;
  let x = input.x; // [n, H]
  let routerInput = x;
  let base = input.base;
  if (training && m.jitterNoise > 0) {
    const noise = rand([...x.shape], { dtype: x.dtype, device: x.device })
      .mul_(2 * m.jitterNoise)
      .add_(1 - m.jitterNoise);
    routerInput = x.mul(noise);
    // As the reference does: the switch router alone sees the noise; the other strategies feed the
    // jittered states to the experts too (so the shared projections no longer apply).
    if (m.routingStrategy !== 'mixlora-switch') {
      x = routerInput;
      base = null;
    }
  }
  const logits = linear(routerInput.to('float32'), layer.router); // [n, E]
  const scaled = m.routingStrategy === 'mixlora-dynamic' && m.temperature > 0 ? logits.div(m.temperature) : logits;
  const probs = scaled.softmax(-1); // [n, E]
  const r = route(probs, m, { rows, len, valid });
  // Slots grouped by expert: one gather of the inputs, then contiguous slices per expert.
  const order = r.experts.argsort(0); // [m]
  const tokens = r.tokens.indexSelect(0, order); // [m]
  const weights = r.weights.indexSelect(0, order); // [m]
  const perExpert = bincount(r.experts, m.numExperts).toNumbers(); // one host sync
  const xs = x.indexSelect(0, tokens); // [m, H]
  const shared = input.efficient && base !== null;
  // split, not narrow: its backward is one concatenation, where narrow's would add a full-size
  // zero-padded gradient per expert.
  const xParts = xs.split(perExpert, 0); // E × [c, H]
  const gParts = shared ? base!.gate.indexSelect(0, tokens).split(perExpert, 0) : null; // E × [c, I]
  const uParts = shared ? base!.up.indexSelect(0, tokens).split(perExpert, 0) : null; // E × [c, I]
  const downLora = layer.experts.down_proj;
  const sharedDown = input.efficient && !w.proj.down_proj.bias && !downLora?.magnitude;
  const pieces: Tensor[] = []; // per expert: its FFN output [c, H], or (sharedDown) its down LoRA delta
  const hidden: Tensor[] = []; // sharedDown: per expert, its weighted hidden states [c, I]
  const wParts = sharedDown ? weights.split(perExpert, 0) : []; // E × [c]
  perExpert.forEach((count, e) => {
    if (count === 0) return;
    const xe = xParts[e]!; // [c, H]
    const gateBase = gParts ? gParts[e]! : frozenLinear(xe, w.proj.gate_proj); // [c, I]
    const upBase = uParts ? uParts[e]! : frozenLinear(xe, w.proj.up_proj); // [c, I]
    const gate = project('gate_proj', layer, e, xe, gateBase, w.proj.gate_proj, training);
    const up = project('up_proj', layer, e, xe, upBase, w.proj.up_proj, training);
    const h = swiglu(gate, up); // [c, I]
    if (sharedDown) {
      // Weighted per expert (not after a cat): the product's backward then keeps h itself, which the
      // down LoRA keeps anyway, instead of a concatenated copy of every expert's h.
      hidden.push(h.to('float32').mul(wParts[e]!.unsqueeze(1))); // [c, I] wₑ hₑ
      if (downLora) pieces.push(loraDelta(h, expertParams(downLora, e), training)); // [c, H] float32
      return;
    }
    const downBase = frozenLinear(h, w.proj.down_proj); // [c, H]
    pieces.push(project('down_proj', layer, e, h, downBase, w.proj.down_proj, training));
  });
  const n = input.x.size(0);
  const H = input.x.size(1);
  let out: Tensor; // [n, H] float32 accumulator
  if (hidden.length > 0) {
    const hs = hidden.length === 1 ? hidden[0]! : cat(hidden, 0); // [m, I]
    const mixed = zeros([n, hs.size(1)], { device: x.device }).indexAdd(0, tokens, hs); // [n, I] Σₑ wₑ hₑ
    out = frozenLinear(mixed.to(input.x.dtype), w.proj.down_proj).to('float32'); // [n, H] (no bias here)
  } else {
    out = zeros([n, H], { device: x.device });
  }
  if (pieces.length > 0) {
    const ys = (pieces.length === 1 ? pieces[0]! : cat(pieces, 0)).to('float32').mul(weights.unsqueeze(1)); // [m, H]
    out = out.indexAdd(0, tokens, ys);
  }
  if (training && m.routingStrategy === 'mixlora-switch' && m.ffnDropout > 0) out = out.dropout(m.ffnDropout, true);
  const validIdx = valid ? valid.nonzero().squeeze(1) : null;
  return {
    out: out.to(input.x.dtype),
    logits: validIdx ? logits.indexSelect(0, validIdx) : logits,
    probs: validIdx ? probs.indexSelect(0, validIdx) : probs,
    counts: r.counts,
  };
}
