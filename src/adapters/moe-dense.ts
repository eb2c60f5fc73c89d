// MixLoRA experts at inference on a few tokens (a decode step): every expert runs on every token at
// once, as products batched over the expert dimension, and the routing weights (zero for experts not
// chosen) combine them. On a handful of tokens this is a few dozen ops per layer where the sparse path
// (moe.ts) loops over experts with gathers, splits and one frozen down projection per expert; the
// extra work on unchosen experts is rank-r products only. Equal to the sparse path up to rounding.
import { zeros } from '../tensor/create.js';
import { stack, swiglu } from '../tensor/ops.js';
import type { Tensor } from '../tensor/tensor.js';
import { linearOf, type LayerWeights, type Linear } from '../models/weights.js';
import { frozenLinear } from '../models/frozen-linear.js';
import { doraOutput, doraScale, frozenScale, type LoraParams } from './lora.js';
import { expertParams, type MoeLayer } from './params.js';
import type { Routing } from './routing.js';

/** Decode steps and short batches take the dense path; longer inputs (prefill) the sparse one. */
export const DENSE_MAX_TOKENS = 64;

/** Whether the dense path pays off for n tokens (at inference): few tokens, and DoRA experts only with
 * their scales precomputed (a frozen adapter), since computing every expert's norms on every forward
 * costs more than the sparse path, which computes the chosen experts' only. */
export function denseFits(layer: MoeLayer, n: number): boolean {
  if (n > DENSE_MAX_TOKENS) return false;
  return Object.values(layer.experts).every((p) => !p?.magnitude || frozenScale(p, false) !== null);
}

/** s·B_e A_e x for every expert e: x [n, in] (the same for every expert) or [E, n, in] (its own per
 * expert) -> [E, n, out] float32. */
function expertDeltas(x: Tensor, p: LoraParams): Tensor {
  const xr = x.to('float32').matmul(p.A.transpose(1, 2)); // [E, n, r]
  return xr.matmul(p.B.transpose(1, 2)).mul(p.scale); // [E, n, out]
}

/** DoRA's per-expert scale [E, out]: precomputed for a frozen adapter, else computed here. */
function expertScales(p: LoraParams, lin: Linear, E: number): Tensor {
  return (
    frozenScale(p, false) ??
    stack(
      Array.from({ length: E }, (_, e) => doraScale(lin.weight, expertParams(p, e))),
      0,
    )
  );
}

/** Every expert's adapted projection [E, n, out] (in base's dtype) given the frozen output base
 * [n, out] of x [n, in], as applyLora computes it per expert; base itself when the projection has no
 * experts' LoRA. */
function adapted(p: LoraParams | undefined, x: Tensor, base: Tensor, lin: Linear, E: number): Tensor {
  const n = base.size(0);
  const out = base.size(1);
  if (!p) return base.unsqueeze(0).expand(E, n, out); // [E, n, out]
  const delta = expertDeltas(x, p); // [E, n, out]
  if (!p.magnitude) return base.to('float32').unsqueeze(0).add(delta).to(base.dtype); // [E, n, out]
  return doraOutput(base, delta, expertScales(p, lin, E).unsqueeze(1), lin.bias).to(base.dtype); // [E, n, out]
}

/** The block's output [n, H] float32 for x [n, H], the frozen gate/up outputs [n, I] and routing routing. */
export function denseExperts(
  layer: MoeLayer,
  w: LayerWeights,
  x: Tensor,
  base: { gate: Tensor; up: Tensor },
  routing: Routing,
): Tensor {
  const E = layer.settings.numExperts;
  const [n, H] = x.shape as [number, number];
  const I = base.gate.size(1);
  const ex = layer.experts;
  // Routing weights as a dense [E, n] table, zero where an expert was not chosen.
  const weights = zeros([n * E], { device: x.device })
    .indexAdd(0, routing.tokens.mul(E).add(routing.experts), routing.weights)
    .view(n, E)
    .transpose(0, 1); // [E, n]
  const gate = adapted(ex.gate_proj, x, base.gate, linearOf(w, 'gate_proj'), E).contiguous(); // [E, n, I]
  const up = adapted(ex.up_proj, x, base.up, linearOf(w, 'up_proj'), E).contiguous(); // [E, n, I]
  const h = swiglu(gate, up); // [E, n, I]
  const down = linearOf(w, 'down_proj');
  const p = ex.down_proj;
  const we = weights.unsqueeze(2); // [E, n, 1]
  const delta = p ? expertDeltas(h, p) : null; // [E, n, H] float32
  if (!down.bias && !p?.magnitude) {
    // Σₑ wₑ W hₑ = W Σₑ wₑ hₑ: the frozen down projection once, on the weighted hidden states.
    const mixed = h.to('float32').mul(we).sum(0); // [n, I]
    const out = frozenLinear(mixed.to(x.dtype), down).to('float32'); // [n, H] (no bias here)
    return delta ? out.add(delta.mul(we).sum(0)) : out;
  }
  // DoRA or a bias on down_proj: each chosen (token, expert) pair's own down projection, in one product.
  const slot = routing.experts.mul(n).add(routing.tokens); // [m] rows of [E·n]
  const hs = h.view(E * n, I).indexSelect(0, slot); // [m, I]
  const baseDown = frozenLinear(hs, down); // [m, H]
  let y = baseDown.to('float32'); // [m, H]
  if (p && delta) {
    const d = delta.view(E * n, H).indexSelect(0, slot); // [m, H]
    if (!p.magnitude) y = y.add(d);
    else {
      const scale = expertScales(p, down, E).indexSelect(0, routing.experts); // [m, H]
      y = doraOutput(y, d, scale, down.bias); // [m, H]
    }
  }
  return zeros([n, H], { device: x.device }).indexAdd(0, routing.tokens, y.mul(routing.weights.unsqueeze(1))); // [n, H]
}
