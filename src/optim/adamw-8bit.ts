// AdamW with 8-bit blockwise state (bitsandbytes' AdamW8bit; Dettmers et al. 2022): each moment is one
// byte per value (an index into a 256-entry dynamic map) plus a float32 absmax per 256 values, so the
// optimizer state takes 2.03 bytes per trainable value instead of 8. The update itself is AdamW's float32
// arithmetic on the dequantised moments (native/kernels/optim_8bit.cc); only the stored moments are rounded.
// Parameters with fewer than MIN_8BIT_SIZE values keep float32 moments, as bitsandbytes does (a router's
// bias gains nothing from quantisation and loses the most).
import { native } from '../tensor/native.js';
import { Tensor } from '../tensor/tensor.js';
import { noGrad } from '../tensor/autograd.js';
import { zeros } from '../tensor/create.js';
import { ITEM_SIZE } from '../tensor/dtype.js';
import { UserError } from '../util/errors.js';
import { adamwHyper, type AdamWOptions } from './adamw.js';
import { StepwiseOptimizer, type OptimizerState } from './optimizer.js';

/** Values per absmax block of the quantised moments. */
export const BLOCK_8BIT = 256;
/** Smaller parameters keep float32 moments (bitsandbytes' min_8bit_size). */
export const MIN_8BIT_SIZE = 4096;

export interface AdamW8bitOptions extends AdamWOptions {
  /** Run the tensor-op executor even where the one-pass CPU loop applies (tests compare the two). */
  tensorOps?: boolean;
}

type MomentState =
  | { kind: 'float32'; expAvg: Tensor; expAvgSq: Tensor }
  | { kind: '8bit'; expAvgCodes: Tensor; expAvgAbsmax: Tensor; expAvgSqCodes: Tensor; expAvgSqAbsmax: Tensor };

const QUANTISED_NAMES = ['exp_avg_codes', 'exp_avg_absmax', 'exp_avg_sq_codes', 'exp_avg_sq_absmax'] as const;
const FLOAT_NAMES = ['exp_avg', 'exp_avg_sq'] as const;

function blocksOf(numel: number): number {
  return Math.ceil(numel / BLOCK_8BIT);
}

export class AdamW8bit extends StepwiseOptimizer {
  readonly kind = 'adamw8bit';
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly weightDecay: number;
  private readonly tensorOps: boolean;
  private readonly state: MomentState[];

  constructor(params: Tensor[], opts: AdamW8bitOptions) {
    super(params, opts.lr);
    ({ beta1: this.beta1, beta2: this.beta2, eps: this.eps, weightDecay: this.weightDecay } = adamwHyper(opts));
    this.tensorOps = opts.tensorOps ?? false;
    this.state = noGrad(() =>
      params.map((p): MomentState => {
        if (p.numel < MIN_8BIT_SIZE) {
          return { kind: 'float32', expAvg: p.zerosLike().keep(), expAvgSq: p.zerosLike().keep() };
        }
        const where = { device: p.device };
        return {
          kind: '8bit',
          // Zero absmax: every code dequantises to 0, whatever it is.
          expAvgCodes: zeros([p.numel], { dtype: 'uint8', ...where }).keep(),
          expAvgAbsmax: zeros([blocksOf(p.numel)], { dtype: 'float32', ...where }).keep(),
          expAvgSqCodes: zeros([p.numel], { dtype: 'uint8', ...where }).keep(),
          expAvgSqAbsmax: zeros([blocksOf(p.numel)], { dtype: 'float32', ...where }).keep(),
        };
      }),
    );
  }

  /** Bytes of optimizer state held (the moments, quantised or not). */
  stateBytes(): number {
    return this.stateTensors().reduce((sum, [, t]) => sum + t.numel * ITEM_SIZE[t.dtype], 0);
  }

  update(indices: readonly number[]): void {
    const small = indices.filter((i) => this.state[i]!.kind === 'float32');
    const large = indices.filter((i) => this.state[i]!.kind === '8bit');
    const float32 = (i: number) => this.state[i] as Extract<MomentState, { kind: 'float32' }>;
    const quantised = (i: number) => this.state[i] as Extract<MomentState, { kind: '8bit' }>;
    if (small.length > 0) {
      native.adamw(
        small.map((i) => this.params[i]!.id),
        small.map((i) => float32(i).expAvg.id),
        small.map((i) => float32(i).expAvgSq.id),
        this.stepCount,
        this.lr,
        this.beta1,
        this.beta2,
        this.eps,
        this.weightDecay,
      );
    }
    if (large.length > 0) {
      native.adamw8bit(
        large.map((i) => this.params[i]!.id),
        large.map((i) => quantised(i).expAvgCodes.id),
        large.map((i) => quantised(i).expAvgAbsmax.id),
        large.map((i) => quantised(i).expAvgSqCodes.id),
        large.map((i) => quantised(i).expAvgSqAbsmax.id),
        this.stepCount,
        this.lr,
        this.beta1,
        this.beta2,
        this.eps,
        this.weightDecay,
        this.tensorOps,
      );
    }
  }

  private stateTensors(): [string, Tensor][] {
    return this.state.flatMap((s, i): [string, Tensor][] =>
      s.kind === 'float32'
        ? [
            [`exp_avg.${i}`, s.expAvg],
            [`exp_avg_sq.${i}`, s.expAvgSq],
          ]
        : [
            [`exp_avg_codes.${i}`, s.expAvgCodes],
            [`exp_avg_absmax.${i}`, s.expAvgAbsmax],
            [`exp_avg_sq_codes.${i}`, s.expAvgSqCodes],
            [`exp_avg_sq_absmax.${i}`, s.expAvgSqAbsmax],
          ],
    );
  }

  /** The state, borrowing the moment tensors (write them out before the next step). */
  stateDict(): OptimizerState {
    return {
      kind: this.kind,
      step: this.stepCount,
      lr: this.lr,
      hyper: {
        beta1: this.beta1,
        beta2: this.beta2,
        eps: this.eps,
        weightDecay: this.weightDecay,
        block: BLOCK_8BIT,
        minSize: MIN_8BIT_SIZE,
      },
      tensors: Object.fromEntries(this.stateTensors()),
    };
  }

  /** Restores a state saved by stateDict (bit-exactly); a saved tensor of the wrong dtype or shape is named. */
  loadStateDict(state: OptimizerState, where = 'optimizer state'): void {
    if (state.kind !== this.kind)
      throw new UserError(`${where}: the optimizer state is for ${state.kind}, not ${this.kind}`);
    if (state.hyper['block'] !== BLOCK_8BIT)
      throw new UserError(`${where}: 8-bit state in blocks of ${String(state.hyper['block'])}, expected ${BLOCK_8BIT}`);
    const pairs: [Tensor, Tensor][] = [];
    this.state.forEach((s, i) => {
      const p = this.params[i]!;
      const expected: [string, Tensor, string, readonly number[]][] =
        s.kind === 'float32'
          ? FLOAT_NAMES.map((n, k) => [n, k === 0 ? s.expAvg : s.expAvgSq, p.dtype, p.shape])
          : QUANTISED_NAMES.map((n) => {
              const own = {
                exp_avg_codes: s.expAvgCodes,
                exp_avg_absmax: s.expAvgAbsmax,
                exp_avg_sq_codes: s.expAvgSqCodes,
                exp_avg_sq_absmax: s.expAvgSqAbsmax,
              }[n];
              return [n, own, own.dtype, own.shape];
            });
      for (const [name, own, dtype, shape] of expected) {
        const t = state.tensors[`${name}.${i}`];
        if (!t) throw new UserError(`${where}: optimizer tensor '${name}.${i}' is missing`);
        if (t.dtype !== dtype || t.shape.join(',') !== shape.join(','))
          throw new UserError(
            `${where}: optimizer tensor '${name}.${i}' is ${t.dtype} [${t.shape.join(', ')}], expected ${dtype} [${shape.join(', ')}]`,
          );
        pairs.push([own, t]);
      }
    });
    noGrad(() => {
      for (const [own, saved] of pairs) own.copy_(saved);
    });
    this.stepCount = state.step;
    this.lr = state.lr;
  }

  dispose(): void {
    for (const [, t] of this.stateTensors()) t.dispose();
  }
}

/** The two 256-entry float32 maps of the moments' codes: [signed (first moment), unsigned (second)]. */
export function adamw8bitMaps(): [Tensor, Tensor] {
  const [s, u] = native.adamw8bitMaps();
  return [new Tensor(s), new Tensor(u)];
}
