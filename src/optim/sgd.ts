// SGD with momentum, dampening, Nesterov and weight decay, with PyTorch's semantics (torch.optim.SGD):
// the momentum buffer starts as a copy of the first gradient.
import { native } from '../tensor/native.js';
import { Tensor } from '../tensor/tensor.js';
import { noGrad } from '../tensor/autograd.js';
import { checkState, StepwiseOptimizer, type OptimizerState } from './optimizer.js';

export interface SGDOptions {
  lr: number;
  momentum?: number;
  dampening?: number;
  weightDecay?: number;
  nesterov?: boolean;
}

export class SGD extends StepwiseOptimizer {
  readonly kind = 'sgd';
  readonly momentum: number;
  readonly dampening: number;
  readonly weightDecay: number;
  readonly nesterov: boolean;
  private buffers: (Tensor | null)[];

  constructor(params: Tensor[], opts: SGDOptions) {
    super(params, opts.lr);
    this.momentum = opts.momentum ?? 0;
    this.dampening = opts.dampening ?? 0;
    this.weightDecay = opts.weightDecay ?? 0;
    this.nesterov = opts.nesterov ?? false;
    if (this.nesterov && (this.momentum <= 0 || this.dampening !== 0)) {
      throw new RangeError('SGD: Nesterov momentum needs momentum > 0 and dampening 0');
    }
    this.buffers = params.map(() => null);
  }

  update(indices: readonly number[]): void {
    const ids = native.sgd(
      indices.map((i) => this.params[i]!.id),
      indices.map((i) => this.buffers[i]?.id ?? null),
      this.lr,
      this.momentum,
      this.dampening,
      this.weightDecay,
      this.nesterov,
    );
    if (this.momentum === 0) return;
    // The addon returns every buffer it was given: existing ones again (fresh handles) and new ones.
    ids.forEach((id, k) => {
      const i = indices[k]!;
      this.buffers[i]?.dispose();
      this.buffers[i] = new Tensor(id).keep();
    });
  }

  stateDict(): OptimizerState {
    const tensors: Record<string, Tensor> = {};
    this.buffers.forEach((t, i) => {
      if (t) tensors[`momentum_buffer.${i}`] = t;
    });
    return {
      kind: this.kind,
      step: this.stepCount,
      lr: this.lr,
      hyper: {
        momentum: this.momentum,
        dampening: this.dampening,
        weightDecay: this.weightDecay,
        nesterov: this.nesterov,
      },
      tensors,
    };
  }

  loadStateDict(state: OptimizerState, where?: string): void {
    checkState(state, this.kind, this.params, this.momentum !== 0 && state.step > 0 ? ['momentum_buffer'] : [], where);
    for (const b of this.buffers) b?.dispose();
    this.buffers = this.params.map((_, i) => {
      const src = state.tensors[`momentum_buffer.${i}`];
      return src ? noGrad(() => src.clone().keep()) : null;
    });
    this.stepCount = state.step;
    this.lr = state.lr;
  }

  dispose(): void {
    for (const b of this.buffers) b?.dispose();
    this.buffers = this.params.map(() => null);
  }
}
