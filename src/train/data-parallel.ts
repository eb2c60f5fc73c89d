// Data parallelism in the training loop (docs/design.md §6.6): every rank holds the frozen base and all
// adapters; each optimizer step's micro-batches are dealt to the ranks, and before the step the
// adapters' gradients are summed across ranks, so every rank takes the same step as one process would.
//
// Micro-batch j of a step batch (examples [j·m, (j+1)·m)) goes to rank j mod W, as the j div W-th of
// that rank's slots. Each rank runs ceil(M / W) slots per step; where a rank has no micro-batch for a
// slot (the short last batch of an epoch) it sits that slot out for that adapter. The per-micro-batch
// losses are already divided by the whole step's scored tokens and micro-batch count (step.ts), so the
// sum over ranks of the local gradient sums is the one-process gradient, up to the order of the float
// additions: one process adds g0 + g1 + g2 + g3 in turn, two ranks add (g0 + g2) + (g1 + g3).
import type { Tensor } from '../tensor/tensor.js';
import { tensor, zeros } from '../tensor/create.js';
import { noGrad } from '../tensor/autograd.js';
import { tidy } from '../tensor/scope.js';
import type { Group } from '../distributed/group.js';
import { UserError } from '../util/errors.js';
import type { StepTotals } from './checkpoint.js';
import type { TrainConfig } from './config.js';

/** Slots each rank runs for a step of `stepMicroBatches` micro-batches. */
export function slotsPerStep(stepMicroBatches: number, worldSize: number): number {
  return Math.ceil(stepMicroBatches / worldSize);
}

/** The step-batch micro-batch this rank runs in `slot`, or null when it sits the slot out. */
export function microBatchOfSlot(
  slot: number,
  stepMicroBatches: number,
  g: Pick<Group, 'rank' | 'worldSize'>,
): number | null {
  const j = slot * g.worldSize + g.rank;
  return j < stepMicroBatches ? j : null;
}

/** The generator seed of a rank once the adapters exist: rank 0 keeps the run's seed (so a one-rank job
 * is the plain run), the others get their own streams, so that their dropout and jitter masks differ. */
export function rankSeed(seed: number, rank: number): number {
  return rank === 0 ? seed : (seed * 1000003 + rank * 7919) % 2 ** 48;
}

/** Full step batches must split evenly into micro-batches over the ranks (refused before training). */
export function checkBatchSplit(cfg: TrainConfig, worldSize: number): void {
  if (worldSize === 1) return;
  if (cfg.optimizerInBackward)
    throw new UserError(
      `${cfg.file}: optimizer_in_backward takes one process (WORLD_SIZE is ${worldSize}): each step needs the gradients summed across ranks first`,
    );
  for (const a of cfg.adapters) {
    if (a.batchSize % (a.microBatchSize * worldSize) !== 0)
      throw new UserError(
        `${cfg.file}: adapter '${a.name}': batch_size ${a.batchSize} is not divisible by micro_batch_size ${a.microBatchSize} × WORLD_SIZE ${worldSize}; ` +
          `make batch_size a multiple of ${a.microBatchSize * worldSize}`,
      );
  }
}

const STAT_KEYS = ['ce', 'aux', 'auxCount', 'scored', 'input'] as const;

/**
 * Sums one adapter's gradients and step statistics across ranks, before its optimizer step. Two
 * collectives: the statistics with a has-gradient flag per parameter (float64, exact), then the
 * gradients that any rank has, in one flat buffer. A parameter no rank reached keeps no gradient
 * (the optimizers skip it, as in one process). Returns the summed statistics (`seconds` stays local).
 *
 * The gradients' buffer lives where the gradients do: on the rank's GPU with NCCL (group.ts). The
 * statistics are JavaScript numbers, so they stay on the CPU and go through Gloo in either case: no
 * host-device copies for them, and a peer that died during the backward passes is named by Gloo at
 * once rather than found by NCCL's timeout.
 */
export function allReduceStep(g: Group, params: Tensor[], totals: StepTotals): StepTotals {
  // (a real one-rank group still sums: MIXLORA_DIST_FORCE_GROUP runs training through c10d that way)
  if (g.backend === 'none') return totals;
  // (grad handles are new wrappers on each read: the scope frees them, the gradients stay)
  const summed = tidy(() => {
    const local = [...STAT_KEYS.map((k) => totals[k]), ...params.map((p) => (p.grad ? 1 : 0))];
    const stats = tensor(local, { dtype: 'float64' }); // [5 + P] on the CPU
    g.allReduceSum([stats]);
    return stats.toNumbers();
  });
  tidy(() => {
    const reached = params.filter((_, i) => summed[STAT_KEYS.length + i]! > 0);
    noGrad(() => {
      for (const p of reached) if (!p.grad) p.grad = zeros([...p.shape], { dtype: p.dtype, device: p.device });
    });
    g.allReduceSum(reached.map((p) => p.grad!));
  });
  const out = { ...totals };
  STAT_KEYS.forEach((k, i) => (out[k] = summed[i]!));
  return out;
}
