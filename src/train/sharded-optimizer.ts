// The optimizer state sharded across the ranks of a data-parallel job (shard_optimizer: true; ZeRO stage 1,
// as DeepSpeed and PyTorch's ZeroRedundancyOptimizer do it). Each parameter has one owner rank, chosen so
// the ranks own about the same number of values; a rank keeps the optimizer state (AdamW's moments, the 8-bit
// state, SGD's momentum) of its own parameters only and updates only them. After each step every parameter
// is summed across ranks with the other ranks' copies zeroed, which hands every rank the owner's values,
// exactly. The gradients are summed before the step as in plain data parallelism (every rank has them
// all, so clipping sees the whole norm), and each parameter's update is the arithmetic one process does: the
// adapters equal plain data parallelism's, bit for bit.
//
// The saved state is the one an unsharded optimizer saves (`<name>.<parameter index>`): collectState(), a
// collective, brings every rank's part to rank 0 before a checkpoint, and loadStateDict() keeps the part
// this rank owns. A checkpoint resumes with or without sharding.
import { noGrad } from '../tensor/autograd.js';
import { native } from '../tensor/native.js';
import { zeros } from '../tensor/create.js';
import { tidy } from '../tensor/scope.js';
import type { Tensor } from '../tensor/tensor.js';
import type { Group } from '../distributed/group.js';
import type { Optimizer, OptimizerState } from '../optim/optimizer.js';

/** The owner rank of each parameter: the largest first, each to the rank that owns the fewest values so far
 * (ties to the lowest rank), so every rank computes the same partition. */
export function ownerRanks(sizes: number[], worldSize: number): number[] {
  const load = Array<number>(worldSize).fill(0);
  const owner = Array<number>(sizes.length).fill(0);
  const order = sizes.map((_, i) => i).sort((a, b) => sizes[b]! - sizes[a]! || a - b);
  for (const i of order) {
    const rank = load.indexOf(Math.min(...load));
    owner[i] = rank;
    load[rank]! += sizes[i]!;
  }
  return owner;
}

const KEY = /^(.*)\.(\d+)$/;

export class ShardedOptimizer implements Optimizer {
  readonly kind: string;
  /** The optimizer over this rank's own parameters. */
  private readonly inner: Optimizer;
  /** Indices (into params) of the parameters this rank owns, in order: inner's parameter k is params[mine[k]]. */
  private readonly mine: number[];
  private readonly owner: number[];
  /** Rank 0, after collectState(): the other ranks' state tensors, until releaseCollected(). */
  private collected: Record<string, Tensor> | null = null;

  constructor(
    readonly params: Tensor[],
    private readonly group: Group,
    makeInner: (own: Tensor[]) => Optimizer,
  ) {
    this.owner = ownerRanks(
      params.map((p) => p.numel),
      group.worldSize,
    );
    this.mine = params.map((_, i) => i).filter((i) => this.owner[i] === group.rank);
    this.inner = makeInner(this.mine.map((i) => params[i]!));
    this.kind = this.inner.kind;
  }

  /** Parameter values whose optimizer state this rank keeps. */
  get ownedValues(): number {
    return this.mine.reduce((n, i) => n + this.params[i]!.numel, 0);
  }

  get lr(): number {
    return this.inner.lr;
  }
  set lr(v: number) {
    this.inner.lr = v;
  }
  get stepCount(): number {
    return this.inner.stepCount;
  }
  set stepCount(v: number) {
    this.inner.stepCount = v;
  }

  /** Updates this rank's parameters, then hands every rank the owners' values. */
  step(): void {
    this.releaseCollected();
    this.inner.step();
    noGrad(() => {
      this.params.forEach((p, i) => {
        if (this.owner[i] !== this.group.rank) p.zero_();
      });
      this.group.allReduceSum(this.params);
    });
  }

  /** The parts of a step (optimizer_in_backward, one process only): no exchange of parameters follows. */
  beginStep(): void {
    this.inner.beginStep();
  }

  update(indices: readonly number[]): void {
    const local = indices.map((i) => this.mine.indexOf(i)).filter((k) => k >= 0);
    this.inner.update(local);
  }

  zeroGrad(): void {
    native.zeroGrad(this.params.map((p) => p.id));
  }

  /** Collective: rank 0 receives the other ranks' state tensors (for stateDict(), until releaseCollected());
   * the others take part. Each tensor is summed across ranks from its owner's copy and zeros elsewhere. */
  collectState(): void {
    this.releaseCollected();
    const own = this.ownState();
    const listed = this.group.allGatherJson(Object.entries(own).map(([k, t]) => [k, t.shape, t.dtype] as const));
    // Each key has one owner; every rank walks them in the same order.
    const keys = listed.flat().sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    const collected: Record<string, Tensor> = {};
    tidy(() =>
      noGrad(() => {
        for (const [key, shape, dtype] of keys) {
          const mine = own[key];
          const t = mine ? mine.clone() : zeros([...shape], { dtype, device: this.params[0]!.device });
          this.group.allReduceSum([t]);
          if (this.group.rank === 0 && !mine) collected[key] = t.keep();
        }
      }),
    );
    if (this.group.rank === 0) this.collected = collected;
  }

  /** This rank's state tensors (borrowed) under their unsharded names. */
  private ownState(): Record<string, Tensor> {
    const tensors: Record<string, Tensor> = {};
    for (const [k, t] of Object.entries(this.inner.stateDict().tensors)) {
      const [, name, index] = KEY.exec(k)!;
      tensors[`${name}.${this.mine[Number(index)]}`] = t;
    }
    return tensors;
  }

  /** The state in the unsharded layout, borrowing its tensors: this rank's part, and on rank 0 after
   * collectState() the other ranks' too. */
  stateDict(): OptimizerState {
    return { ...this.inner.stateDict(), tensors: { ...this.ownState(), ...(this.collected ?? {}) } };
  }

  /** Keeps the part of a saved (unsharded-layout) state that this rank owns. */
  loadStateDict(state: OptimizerState, where?: string): void {
    const tensors: Record<string, Tensor> = {};
    for (const [k, t] of Object.entries(state.tensors)) {
      const m = KEY.exec(k);
      const local = m ? this.mine.indexOf(Number(m[2])) : -1;
      if (m && local >= 0) tensors[`${m[1]}.${local}`] = t;
    }
    this.inner.loadStateDict({ ...state, tensors }, where);
  }

  /** Frees what collectState() brought to rank 0 (after the checkpoint is written). */
  releaseCollected(): void {
    if (!this.collected) return;
    for (const t of Object.values(this.collected)) t.dispose();
    this.collected = null;
  }

  dispose(): void {
    this.releaseCollected();
    this.inner.dispose();
  }
}
