// What differs between the ranks of a data-parallel run at a checkpoint: the gradients of optimizer
// steps still being accumulated (each rank's own micro-batches, not yet summed) and the random
// generators. Rank 0, the only writer, gathers them and the checkpoint keeps them per rank in
// rank-<r>.safetensors (`grad.<adapter>.<parameter>`, `rng.cpu` and, on CUDA, `rng.device`: the rank's
// own device, cuda:LOCAL_RANK); resuming, each rank reads its own.
import path from 'node:path';
import { noGrad } from '../tensor/autograd.js';
import { zeros } from '../tensor/create.js';
import { getRngState, setRngState } from '../tensor/runtime.js';
import { tidy } from '../tensor/scope.js';
import type { Device, Tensor } from '../tensor/tensor.js';
import type { Group } from '../distributed/group.js';
import { loadAll, saveSafetensors } from '../io/safetensors.js';
import type { Adapter } from '../adapters/adapter.js';
import { UserError } from '../util/errors.js';
import { listCheckpoints, readCheckpointState, type CheckpointState } from './checkpoint.js';
import type { TrainConfig } from './config.js';

export const rankFile = (dir: string, rank: number) => path.join(dir, `rank-${rank}.safetensors`);

/** Collective: every rank's partial gradients and generator states; returns the writer of each
 * rank's file on rank 0 and null elsewhere. */
export function gatherRankState(g: Group, adapters: Adapter[], device: Device): ((dir: string) => void) | null {
  const perRank: Map<string, Tensor>[] = Array.from({ length: g.worldSize }, () => new Map());
  const keep = (rank: number, key: string, t: Tensor) => {
    if (g.rank === 0) perRank[rank]!.set(key, t.keep());
  };
  tidy(() =>
    noGrad(() => {
      for (const a of adapters) {
        const params = a.parameters();
        const has = g.allGatherNumbers(params.map((p) => (p.tensor.grad ? 1 : 0)));
        params.forEach((p, i) => {
          if (!has.some((row) => row[i] === 1)) return;
          const local = p.tensor.grad ?? zeros([...p.tensor.shape], { dtype: p.tensor.dtype, device: p.tensor.device });
          const all = g.allGather(local); // [W, ...shape]
          for (let rank = 0; rank < g.worldSize; rank++)
            if (has[rank]![i] === 1) keep(rank, `grad.${a.name}.${p.name}`, all.select(0, rank));
        });
      }
      for (const [key, d] of generators(device)) {
        const all = g.allGather(getRngState(d)); // [W, state bytes]
        for (let rank = 0; rank < g.worldSize; rank++) keep(rank, key, all.select(0, rank));
      }
    }),
  );
  if (g.rank !== 0) return null;
  return (dir: string) => {
    try {
      perRank.forEach((tensors, rank) => saveSafetensors(rankFile(dir, rank), tensors));
    } finally {
      for (const m of perRank) for (const t of m.values()) t.dispose();
    }
  };
}

/** The generators a rank's file keeps: the CPU's and its own CUDA device's. */
function generators(device: Device): [string, Device][] {
  return [['rng.cpu', 'cpu'], ...(device.startsWith('cuda') ? [['rng.device', device] as [string, Device]] : [])];
}

/** Puts this rank's partial gradients and generator states back from a checkpoint. */
export function restoreRankState(dir: string, rank: number, adapters: Adapter[], device: Device): void {
  const file = rankFile(dir, rank);
  const { tensors } = (() => {
    try {
      return loadAll(file);
    } catch (e) {
      throw new UserError(`${file}: cannot read rank ${rank}'s checkpoint state (${(e as Error).message})`);
    }
  })();
  try {
    tidy(() =>
      noGrad(() => {
        for (const a of adapters)
          for (const p of a.parameters()) {
            const g = tensors.get(`grad.${a.name}.${p.name}`);
            p.tensor.grad = g ? g.to(p.tensor.device) : null;
          }
      }),
    );
    for (const [key, d] of generators(device)) {
      const state = tensors.get(key);
      if (!state) throw new UserError(`${file}: no ${key} (the generator state of rank ${rank})`);
      setRngState(state, d);
    }
  } finally {
    for (const t of tensors.values()) t.dispose();
  }
}

/** A checkpoint written by another number of ranks cannot continue exactly: its partial gradients
 * belong to micro-batches dealt for that number (design.md §10). */
export function checkCheckpointRanks(from: string, state: CheckpointState, worldSize: number): void {
  const written = state.worldSize ?? 1;
  if (written !== worldSize)
    throw new UserError(
      `${from}: written by ${written} rank${written === 1 ? '' : 's'}: resume it with WORLD_SIZE=${written}` +
        `${written === 1 ? ' (or without a launcher)' : ''}, not ${worldSize}`,
    );
}

/** Ranks other than 0 resume from the newest complete checkpoint rank 0 wrote (rank 0 alone applies the
 * resume policy of resume.ts: refusals, cleaning up). */
export function followerResumePoint(
  cfg: TrainConfig,
  resume: boolean,
): { from: string | null; state: CheckpointState | null } {
  const all = resume ? listCheckpoints(cfg) : [];
  const from = all.length > 0 ? all[all.length - 1]! : null;
  return { from, state: from ? readCheckpointState(from) : null };
}

/** Collective: every rank must continue from the same checkpoint (one output_dir for all ranks). */
export function checkSameCheckpoint(g: Group, outputDir: string, state: CheckpointState | null): void {
  if (g.worldSize === 1) return;
  const steps = g.allGatherNumbers([state ? state.fusedStep : -1]).map((row) => row[0]!);
  const differs = steps.findIndex((s) => s !== steps[0]);
  if (differs < 0) return;
  const seen = (s: number) => (s < 0 ? 'no checkpoint' : `checkpoint-${s}`);
  throw new UserError(
    `rank ${differs} sees ${seen(steps[differs]!)} in ${outputDir} where rank 0 resumes from ${seen(steps[0]!)}: ` +
      'every rank must see the same output_dir (one machine, or a shared filesystem)',
  );
}
