// What every optimizer offers, and its saved state.
import { native } from '../tensor/native.js';
import type { Tensor } from '../tensor/tensor.js';
import { UserError } from '../util/errors.js';

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
  /** One update from the parameters' current gradients (params without one are skipped): beginStep()
   * then update() of every parameter. */
  step(): void;
  /** The same step in parts (the optimizer step in the backward pass): beginStep() once, then update() of
   * each group of parameters once its gradients are complete. Each parameter's arithmetic is step()'s. */
  beginStep(): void;
  update(indices: readonly number[]): void;
  zeroGrad(): void;
  stateDict(): OptimizerState;
  /** Restores a saved state; `where` names its origin (e.g. the checkpoint file) in errors. */
  loadStateDict(state: OptimizerState, where?: string): void;
  dispose(): void;
}

/** What the three optimizers share: the step count and learning rate, step() as beginStep() then update()
 * of every parameter, and zeroGrad(). */
export abstract class StepwiseOptimizer implements Optimizer {
  abstract readonly kind: string;
  stepCount = 0;

  constructor(
    readonly params: Tensor[],
    public lr: number,
  ) {}

  step(): void {
    this.beginStep();
    this.update(this.params.map((_, i) => i));
  }

  beginStep(): void {
    this.stepCount++;
  }

  abstract update(indices: readonly number[]): void;

  zeroGrad(): void {
    native.zeroGrad(this.params.map((p) => p.id));
  }

  abstract stateDict(): OptimizerState;
  abstract loadStateDict(state: OptimizerState, where?: string): void;
  abstract dispose(): void;
}

/** Saved state from files is untrusted: its kind, and each state tensor's presence and shape. */
export function checkState(
  state: OptimizerState,
  kind: string,
  params: Tensor[],
  names: string[],
  where = 'optimizer state',
): void {
  if (state.kind !== kind) throw new UserError(`${where}: the optimizer state is for ${state.kind}, not ${kind}`);
  for (const name of names) {
    params.forEach((p, i) => {
      const t = state.tensors[`${name}.${i}`];
      if (!t) throw new UserError(`${where}: optimizer tensor '${name}.${i}' is missing`);
      if (t.shape.join(',') !== p.shape.join(','))
        throw new UserError(
          `${where}: optimizer tensor '${name}.${i}' has shape [${t.shape.join(', ')}], its parameter [${p.shape.join(', ')}]`,
        );
    });
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
