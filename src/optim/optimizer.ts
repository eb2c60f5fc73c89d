// What every optimizer offers, and its saved state.
import { native } from '../tensor/native.js';
import type { Tensor } from '../tensor/tensor.js';

export interface OptimizerState {
  kind: string;
  step: number;
  lr: number;
  hyper: Record<string, number | boolean>;
  /** Named state tensors: `<name>.<param index>`. */
  tensors: Record<string, Tensor>;
}

export interface Optimizer {
  readonly kind: string;
  readonly params: Tensor[];
  lr: number;
  stepCount: number;
  step(): void;
  zeroGrad(): void;
  stateDict(): OptimizerState;
  loadStateDict(state: OptimizerState): void;
  dispose(): void;
}

export function checkState(state: OptimizerState, kind: string, nParams: number, names: string[]): void {
  if (state.kind !== kind) throw new Error(`optimizer state is for ${state.kind}, not ${kind}`);
  for (const name of names) {
    for (let i = 0; i < nParams; i++) {
      if (!state.tensors[`${name}.${i}`]) throw new Error(`optimizer state lacks ${name}.${i}`);
    }
  }
}

/** Scales gradients so their global 2-norm is at most maxNorm; returns the norm before clipping
 * (torch.nn.utils.clip_grad_norm_). maxNorm = Infinity only measures. */
export function clipGradNorm(params: Tensor[], maxNorm: number): number {
  return native.clipGradNorm(
    params.map((p) => p.id),
    maxNorm,
  );
}
