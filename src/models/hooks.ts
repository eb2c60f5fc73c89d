// How adapters reach into the frozen model: every projection and every feed-forward block goes
// through these hooks. The plain hooks are the base model; src/adapters implements adapted ones.
import { swiglu } from '../tensor/ops.js';
import type { Tensor } from '../tensor/tensor.js';
import type { RowSegments } from '../nn/mask.js';
import type { Activation } from './config.js';
import { frozenLinear } from './frozen-linear.js';
import { splitGateUp } from './phi3.js';
import { linearOf, type LayerWeights, type Linear, type ProjName } from './weights.js';

export interface ForwardHooks {
  /** Called at the start of each forward pass: which of the T new positions of each row are real
   * tokens ([B, T], 1 = token) or null when none is padding; and, for rows that pack several examples, where
   * each example is (null otherwise). */
  beginForward?(tokenMask: Tensor | null, packed?: RowSegments | null): void;
  /** x Wᵀ + b for x [B, T, in], plus whatever adapters apply to each row. */
  project(layer: number, name: ProjName, x: Tensor, lin: Linear): Tensor;
  /** The feed-forward block on the normalised hidden states x [B, T, H]. */
  mlp(layer: number, x: Tensor, w: LayerWeights, act: Activation): Tensor;
}

/** act(gate) ⊙ up: SwiGLU, or Gemma's tanh-approximated GELU (gelu_pytorch_tanh). */
export function gated(act: Activation, gate: Tensor, up: Tensor): Tensor {
  return act === 'silu' ? swiglu(gate, up) : gate.gelu('tanh').mul(up);
}

/** gate and up projections [.., I] of x through the hooks: Phi-3's one fused projection, or two. */
export function gateUp(hooks: ForwardHooks, layer: number, x: Tensor, w: LayerWeights): [Tensor, Tensor] {
  if (w.proj.gate_up_proj) return splitGateUp(hooks.project(layer, 'gate_up_proj', x, w.proj.gate_up_proj));
  const gate = hooks.project(layer, 'gate_proj', x, linearOf(w, 'gate_proj')); // [B, T, I]
  return [gate, hooks.project(layer, 'up_proj', x, linearOf(w, 'up_proj'))];
}

/** The frozen gate/up projections of x without adapters: [.., I] each, and Phi-3's fused [.., 2I]. */
export function frozenGateUp(x: Tensor, w: LayerWeights): { gate: Tensor; up: Tensor; fused: Tensor | null } {
  const fused = w.proj.gate_up_proj;
  if (fused) {
    const gu = frozenLinear(x, fused); // [.., 2I]
    const [gate, up] = splitGateUp(gu);
    return { gate, up, fused: gu };
  }
  const g = linearOf(w, 'gate_proj');
  const u = linearOf(w, 'up_proj');
  return { gate: frozenLinear(x, g), up: frozenLinear(x, u), fused: null };
}

/** The gated feed-forward down(act(gate(x)) ⊙ up(x)), each projection through the hooks. */
export function gatedMlp(hooks: ForwardHooks, layer: number, x: Tensor, w: LayerWeights, act: Activation): Tensor {
  const [gate, up] = gateUp(hooks, layer, x, w); // [B, T, I] each
  return hooks.project(layer, 'down_proj', gated(act, gate, up), linearOf(w, 'down_proj')); // [B, T, H]
}

export const plainHooks: ForwardHooks = {
  project: (_layer, _name, x, lin) => frozenLinear(x, lin),
  mlp: (layer, x, w, act) => gatedMlp(plainHooks, layer, x, w, act),
};
