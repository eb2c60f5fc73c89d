// The MixLoRA block that replaces the feed-forward block for an adapter's rows: a float32 router picks
// experts per token; expert e is the frozen gated FFN (SwiGLU, or Gemma's GELU) with its own LoRA/DoRA on
// each targeted projection (Phi-3: on the fused gate_up_proj, as the reference tools' _phi3_forward);
// the output is Σ weight·expert(x) (docs/design.md §4).
//
// Two ways to compute the experts, equal up to rounding:
//  - efficient (paper §3.5): the frozen gate/up projections are computed once per token (shared by
//    every adapter of the batch), each expert adds only its LoRA delta on the rows routed to it; and,
//    since Σₑ wₑ·W hₑ = W (Σₑ wₑ hₑ), the frozen down projection also runs once per token, on the
//    routing-weighted sum of the experts' hidden states (not with DoRA experts on down_proj, whose
//    per-expert column scaling breaks the linearity, nor with a down_proj bias);
//  - per expert (the reference's plain path): each expert runs the whole FFN on its rows.
// `expertPath` picks, once per call, which frozen projections are shared (see ExpertPath).
// Decode steps of the serving engine do not come here: AdapterBatch runs them stacked (stacked-forward.ts).
import { zeros, rand } from '../tensor/create.js';
import { bincount, cat, linear } from '../tensor/ops.js';
import { frozenLinear } from '../models/frozen-linear.js';
import type { Tensor } from '../tensor/tensor.js';
import type { Activation } from '../models/config.js';
import { gated } from '../models/hooks.js';
import { splitGateUp } from '../models/phi3.js';
import { linearOf, type LayerWeights, type Linear } from '../models/weights.js';
import { applyLora, loraDelta } from './lora.js';
import { expertParams, type MlpProj, type MoeLayer } from './params.js';
import { route, type RouterOutput, type Routing } from './routing.js';
import type { MoeSettings } from './config.js';

export interface MoeInput {
  /** Hidden states of the adapter's rows, flattened: [n, H] (n = rows·len). */
  x: Tensor;
  rows: number;
  len: number;
  /** [n] bool: real tokens (padding gets no expert and counts for nothing); null: all real. */
  valid: Tensor | null;
  /** [n] int64: each token's position within its example when rows pack several examples (switch capacity is
   * per example); null or absent: each row is one example. */
  positions?: Tensor | null;
  /** The frozen gate/up projections of x, [n, I] each (and Phi-3's fused [n, 2I]), when already computed
   * (efficient path). */
  base: FrozenGateUp | null;
  /** The base model's activation. */
  act: Activation;
  training: boolean;
  efficient: boolean;
}

export interface FrozenGateUp {
  gate: Tensor;
  up: Tensor;
  fused: Tensor | null;
}

export interface MoeOutput extends RouterOutput {
  /** [n, H] in x's dtype */
  out: Tensor;
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

/**
 * Which frozen projections the experts share (computed once per token) rather than run on their rows:
 *  - 'per-expert': none (the caller asked for it, or no shared projection applies);
 *  - 'shared-gate-up': gate/up given by the caller; down per expert (DoRA on down_proj, or a down bias);
 *  - 'shared-down': gate/up per expert (jitter fed the experts, so the caller's gate/up no longer
 *    apply), down once on the weighted sum of hidden states;
 *  - 'shared-gate-up-down': both.
 */
export type ExpertPath = 'per-expert' | 'shared-gate-up' | 'shared-down' | 'shared-gate-up-down';

export function expertPath(layer: MoeLayer, w: LayerWeights, efficient: boolean, base: MoeInput['base']): ExpertPath {
  if (!efficient) return 'per-expert';
  // Σₑ wₑ·W hₑ = W (Σₑ wₑ hₑ) needs W linear per expert: no bias, no DoRA column scaling.
  const down = !linearOf(w, 'down_proj').bias && !layer.experts.down_proj?.magnitude;
  if (base !== null) return down ? 'shared-gate-up-down' : 'shared-gate-up';
  return down ? 'shared-down' : 'per-expert';
}

const sharesGateUp = (path: ExpertPath) => path === 'shared-gate-up' || path === 'shared-gate-up-down';
const sharesDown = (path: ExpertPath) => path === 'shared-down' || path === 'shared-gate-up-down';

interface Jittered {
  /** What the experts see. */
  x: Tensor;
  /** What the router sees. */
  routerInput: Tensor;
  /** The caller's frozen gate/up, or null once the experts see jittered states. */
  base: MoeInput['base'];
}

/** Multiplicative uniform noise in [1-j, 1+j] on the router's input, in training only. */
function applyJitter(x: Tensor, base: MoeInput['base'], m: MoeSettings, training: boolean): Jittered {
  if (!training || m.jitterNoise <= 0) return { x, routerInput: x, base };
  const noise = rand([...x.shape], { dtype: x.dtype, device: x.device })
    .mul_(2 * m.jitterNoise)
    .add_(1 - m.jitterNoise);
  const routerInput = x.mul(noise);
  // As the reference does: the switch router alone sees the noise; the other strategies feed the
  // jittered states to the experts too (so the shared projections no longer apply).
  if (m.routingStrategy !== 'mixlora-switch') return { x: routerInput, routerInput, base: null };
  return { x, routerInput, base };
}

/** The float32 router: logits [n, E] and their softmax (with dynamic routing's temperature). */
export function routerProbs(routerInput: Tensor, layer: MoeLayer): { logits: Tensor; probs: Tensor } {
  const m = layer.settings;
  const logits = linear(routerInput.to('float32'), layer.router); // [n, E]
  const scaled = m.routingStrategy === 'mixlora-dynamic' && m.temperature > 0 ? logits.div(m.temperature) : logits;
  return { logits, probs: scaled.softmax(-1) }; // [n, E]
}

interface ExpertGroups {
  /** [m] int64: the token of each slot, slots sorted by expert. */
  tokens: Tensor;
  /** [m] float32: the routing weight of each slot, in the same order. */
  weights: Tensor;
  /** Slots per expert (host numbers): the sizes of the contiguous slices. */
  perExpert: number[];
}

/** Slots grouped by expert: one gather of the inputs, then contiguous slices per expert. */
function groupByExpert(routing: Routing, numExperts: number): ExpertGroups {
  const order = routing.experts.argsort(0); // [m]
  const tokens = routing.tokens.indexSelect(0, order); // [m]
  const weights = routing.weights.indexSelect(0, order); // [m]
  const perExpert = bincount(routing.experts, numExperts).toNumbers(); // one host sync
  return { tokens, weights, perExpert };
}

interface ExpertResults {
  /** Per expert, slots in order: its FFN output [c, H], or (shared down) its down LoRA delta. */
  pieces: Tensor[];
  /** Shared down: per expert, its weighted hidden states [c, I] float32 (wₑ hₑ). */
  hidden: Tensor[];
}

/** Expert e's gate and up [c, I] for its tokens xe [c, H]: the frozen projections (given, or computed
 * here) plus the expert's deltas; Phi-3's fused projection is adapted whole, then split. */
function expertGateUp(
  layer: MoeLayer,
  e: number,
  xe: Tensor,
  w: LayerWeights,
  frozen: FrozenGateUp | null,
  training: boolean,
): [Tensor, Tensor] {
  const fused = w.proj.gate_up_proj;
  if (fused) {
    const base = frozen?.fused ?? frozenLinear(xe, fused); // [c, 2I]
    return splitGateUp(project('gate_up_proj', layer, e, xe, base, fused, training));
  }
  const [g, u] = [linearOf(w, 'gate_proj'), linearOf(w, 'up_proj')];
  const gateBase = frozen?.gate ?? frozenLinear(xe, g); // [c, I]
  const upBase = frozen?.up ?? frozenLinear(xe, u); // [c, I]
  return [
    project('gate_proj', layer, e, xe, gateBase, g, training),
    project('up_proj', layer, e, xe, upBase, u, training),
  ];
}

function expertOutputs(
  layer: MoeLayer,
  w: LayerWeights,
  x: Tensor,
  base: MoeInput['base'],
  act: Activation,
  groups: ExpertGroups,
  path: ExpertPath,
  training: boolean,
): ExpertResults {
  const { tokens, weights, perExpert } = groups;
  const xs = x.indexSelect(0, tokens); // [m, H]
  // split, not narrow: its backward is one concatenation, where narrow's would add a full-size
  // zero-padded gradient per expert.
  const xParts = xs.split(perExpert, 0); // E × [c, H]
  const shared = sharesGateUp(path) ? base! : null;
  const perExpertRows = (t: Tensor) => t.indexSelect(0, tokens).split(perExpert, 0);
  // Phi-3 shares its fused [gate | up] (the expert adapts it whole); the others gate and up.
  const fParts = shared?.fused ? perExpertRows(shared.fused) : null; // E × [c, 2I]
  const gParts = shared && !fParts ? perExpertRows(shared.gate) : null; // E × [c, I]
  const uParts = shared && !fParts ? perExpertRows(shared.up) : null; // E × [c, I]
  const down = linearOf(w, 'down_proj');
  const downLora = layer.experts.down_proj;
  const sharedDown = sharesDown(path);
  const pieces: Tensor[] = [];
  const hidden: Tensor[] = [];
  const wParts = sharedDown ? weights.split(perExpert, 0) : []; // E × [c]
  perExpert.forEach((count, e) => {
    if (count === 0) return;
    const xe = xParts[e]!; // [c, H]
    const frozen = shared
      ? { gate: gParts?.[e] as Tensor, up: uParts?.[e] as Tensor, fused: fParts?.[e] ?? null }
      : null;
    const [gate, up] = expertGateUp(layer, e, xe, w, frozen, training); // [c, I] each
    const h = gated(act, gate, up); // [c, I]
    if (sharedDown) {
      // Weighted per expert (not after a cat): the product's backward then keeps h itself, which the
      // down LoRA keeps anyway, instead of a concatenated copy of every expert's h.
      hidden.push(h.to('float32').mul(wParts[e]!.unsqueeze(1))); // [c, I] wₑ hₑ
      if (downLora) pieces.push(loraDelta(h, expertParams(downLora, e), training)); // [c, H] float32
      return;
    }
    const downBase = frozenLinear(h, down); // [c, H]
    pieces.push(project('down_proj', layer, e, h, downBase, down, training));
  });
  return { pieces, hidden };
}

/** Σ weight·expert(x) back at each token's row: [n, H] float32. */
function combine(
  input: MoeInput,
  w: LayerWeights,
  groups: ExpertGroups,
  results: ExpertResults,
  device: Tensor['device'],
): Tensor {
  const { tokens, weights } = groups;
  const { pieces, hidden } = results;
  const n = input.x.size(0);
  const H = input.x.size(1);
  let out: Tensor; // [n, H] float32 accumulator
  if (hidden.length > 0) {
    const hs = hidden.length === 1 ? hidden[0]! : cat(hidden, 0); // [m, I]
    const mixed = zeros([n, hs.size(1)], { device }).indexAdd(0, tokens, hs); // [n, I] Σₑ wₑ hₑ
    out = frozenLinear(mixed.to(input.x.dtype), linearOf(w, 'down_proj')).to('float32'); // [n, H] (no bias here)
  } else {
    out = zeros([n, H], { device });
  }
  if (pieces.length > 0) {
    const ys = (pieces.length === 1 ? pieces[0]! : cat(pieces, 0)).to('float32').mul(weights.unsqueeze(1)); // [m, H]
    out = out.indexAdd(0, tokens, ys);
  }
  return out;
}

export function moeForward(layer: MoeLayer, w: LayerWeights, input: MoeInput): MoeOutput {
  const m = layer.settings;
  const { rows, len, valid, training } = input;
  const { x, routerInput, base } = applyJitter(input.x, input.base, m, training);
  const { logits, probs } = routerProbs(routerInput, layer);
  const routing = route(probs, m, { rows, len, valid, positions: input.positions ?? null });
  const validIdx = valid ? valid.nonzero().squeeze(1) : null;
  const records = {
    logits: validIdx ? logits.indexSelect(0, validIdx) : logits,
    probs: validIdx ? probs.indexSelect(0, validIdx) : probs,
    counts: routing.counts,
  };
  const path = expertPath(layer, w, input.efficient, base);
  const groups = groupByExpert(routing, m.numExperts);
  const results = expertOutputs(layer, w, x, base, input.act, groups, path, training);
  let out = combine(input, w, groups, results, x.device);
  if (training && m.routingStrategy === 'mixlora-switch' && m.ffnDropout > 0) out = out.dropout(m.ffnDropout, true);
  return { out: out.to(input.x.dtype), ...records };
}
