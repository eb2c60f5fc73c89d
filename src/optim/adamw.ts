// AdamW with PyTorch's semantics (torch.optim.AdamW, single-tensor path): decoupled weight decay,
// bias-corrected moments. The update runs in one native call over all parameters (native/bindings/optim.cc).
import { native } from '../tensor/native.js';
import { Tensor } from '../tensor/tensor.js';
import { noGrad } from '../tensor/autograd.js';
import { checkState, StepwiseOptimizer, type OptimizerState } from './optimizer.js';

export interface AdamWOptions {
  lr: number;
  betas?: [number, number];
  eps?: number;
  /** Decoupled weight decay (PyTorch's default is 0.01). */
  weightDecay?: number;
}

/** AdamW's hyperparameters with PyTorch's defaults (betas 0.9, 0.999; eps 1e-8; weight decay 0.01). */
export function adamwHyper(opts: AdamWOptions): { beta1: number; beta2: number; eps: number; weightDecay: number } {
  const [beta1, beta2] = opts.betas ?? [0.9, 0.999];
  return { beta1, beta2, eps: opts.eps ?? 1e-8, weightDecay: opts.weightDecay ?? 0.01 };
}

export class AdamW extends StepwiseOptimizer {
  readonly kind = 'adamw';
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly weightDecay: number;
  private readonly expAvg: Tensor[];
  private readonly expAvgSq: Tensor[];

  constructor(params: Tensor[], opts: AdamWOptions) {
    super(params, opts.lr);
    ({ beta1: this.beta1, beta2: this.beta2, eps: this.eps, weightDecay: this.weightDecay } = adamwHyper(opts));
    this.expAvg = noGrad(() => params.map((p) => p.zerosLike().keep()));
    this.expAvgSq = noGrad(() => params.map((p) => p.zerosLike().keep()));
  }

  update(indices: readonly number[]): void {
    native.adamw(
      indices.map((i) => this.params[i]!.id),
      indices.map((i) => this.expAvg[i]!.id),
      indices.map((i) => this.expAvgSq[i]!.id),
      this.stepCount,
      this.lr,
      this.beta1,
      this.beta2,
      this.eps,
      this.weightDecay,
    );
  }

  /** The state, borrowing the moment tensors (write them out before the next step). */
  stateDict(): OptimizerState {
    const tensors: Record<string, Tensor> = {};
    this.expAvg.forEach((t, i) => {
      tensors[`exp_avg.${i}`] = t;
    });
    this.expAvgSq.forEach((t, i) => {
      tensors[`exp_avg_sq.${i}`] = t;
    });
    return {
      kind: this.kind,
      step: this.stepCount,
      lr: this.lr,
      hyper: { beta1: this.beta1, beta2: this.beta2, eps: this.eps, weightDecay: this.weightDecay },
      tensors,
    };
  }

  /** Restores a state saved by stateDict (values are copied in, bit-exactly). */
  loadStateDict(state: OptimizerState, where?: string): void {
    checkState(state, this.kind, this.params, ['exp_avg', 'exp_avg_sq'], where);
    noGrad(() => {
      this.expAvg.forEach((t, i) => t.copy_(state.tensors[`exp_avg.${i}`]!));
      this.expAvgSq.forEach((t, i) => t.copy_(state.tensors[`exp_avg_sq.${i}`]!));
    });
    this.stepCount = state.step;
    this.lr = state.lr;
  }

  dispose(): void {
    for (const t of [...this.expAvg, ...this.expAvgSq]) t.dispose();
  }
}
