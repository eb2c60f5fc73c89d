// What differs between the ranks of a data-parallel run at a checkpoint: the gradients of optimizer
// steps still being accumulated (each rank's own micro-batches, not yet summed) and the random
// generators. Rank 0, the only writer, gathers them and the checkpoint keeps them per rank in
// rank-<r>.safetensors (`grad.<adapter>.<parameter>`, `rng.<device>`); resuming, each rank reads its own.
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

export const rankFile = (dir: string, rank: number) => path.join(dir, `rank-${rank}.safetensors`);

/** Collective: every rank's partial gradients and generator states; returns the writer of each
 * rank's file on rank 0 and null elsewhere. */
export function gatherRankState(
  g: Group,
  adapters: Adapter[],
  devices: string[],
): ((dir: string) => void) | null {
  const perRank: Map<string, Tensor>[] = Array.from({ length: g.worldSize }, () => new Map());
  const keep = (r: number, key: string, t: Tensor) => {
    if (g.rank === 0) perRank[r]!.set(key, t.keep());
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
          for (let r = 0; r < g.worldSize; r++) if (has[r]![i] === 1) keep(r, `grad.${a.name}.${p.name}`, all.select(0, r));
        });
      }
      for (const d of devices) {
        const all = g.allGather(getRngState(d as Device)); // [W, state bytes]
        for (let r = 0; r < g.worldSize; r++) keep(r, `rng.${d}`, all.select(0, r));
      }
    }),
  );
  if (g.rank !== 0) return null;
  return (dir: string) => {
    try {
      perRank.forEach((tensors, r) => saveSafetensors(rankFile(dir, r), tensors));
    } finally {
      for (const m of perRank) for (const t of m.values()) t.dispose();
    }
  };
}

/** Puts this rank's partial gradients and generator states back from a checkpoint. */
export function restoreRankState(dir: string, rank: number, adapters: Adapter[]): void {
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
    for (const [key, t] of tensors) if (key.startsWith('rng.')) setRngState(t, key.slice(4) as Device);
  } finally {
    for (const t of tensors.values()) t.dispose();
  }
}
