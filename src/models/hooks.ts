// How adapters reach into the frozen model: every projection and every feed-forward block goes
// through these hooks. The plain hooks are the base model; src/adapters implements adapted ones.
import { swiglu } from '../tensor/ops.js';
import type { Tensor } from '../tensor/tensor.js';
import { frozenLinear } from './frozen-linear.js';
import type { LayerWeights, Linear, ProjName } from './weights.js';

export interface ForwardHooks {
  /** Called at the start of each forward pass: which of the T new positions of each row are real
   * tokens ([B, T], 1 = token) or null when none is padding. */
  beginForward?(tokenMask: Tensor | null): void;
  /** x Wᵀ + b for x [B, T, in], plus whatever adapters apply to each row. */
  project(layer: number, name: ProjName, x: Tensor, lin: Linear): Tensor;
  /** The feed-forward block on the normalised hidden states x [B, T, H]. */
  mlp(layer: number, x: Tensor, w: LayerWeights): Tensor;
}

/** SwiGLU feed-forward, down(silu(gate(x)) · up(x)), each projection through the hooks. */
export function swigluMlp(hooks: ForwardHooks, layer: number, x: Tensor, w: LayerWeights): Tensor {
  const gate = hooks.project(layer, 'gate_proj', x, w.proj.gate_proj); // [B, T, I]
  const up = hooks.project(layer, 'up_proj', x, w.proj.up_proj); // [B, T, I]
  return hooks.project(layer, 'down_proj', swiglu(gate, up), w.proj.down_proj); // [B, T, H]
}

export const plainHooks: ForwardHooks = {
  project: (_layer, _name, x, lin) => frozenLinear(x, lin),
  mlp: (layer, x, w) => swigluMlp(plainHooks, layer, x, w),
};
