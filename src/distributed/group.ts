// The process group a data-parallel job runs in: PyTorch's c10d (TCPStore rendezvous, Gloo collectives,
// and NCCL for a CUDA rank's gradients: backend.ts) reached through the addon (native/distributed/distributed.cc).
// A process that runs alone gets `SOLO`, whose collectives are identities, so callers never branch on
// the world size to stay correct.
//
// Collectives block until every rank has joined them or the group's timeout passes; a lost peer is a
// UserError naming this rank and the lost one (the addon asks Gloo's monitored barrier which it is).
import { native } from '../tensor/native.js';
import { fromBytes, tensor } from '../tensor/create.js';
import { Tensor } from '../tensor/tensor.js';
import { UserError } from '../util/errors.js';
import type { DistEnv } from './env.js';
import { chooseBackend, type Backend } from './backend.js';

export interface Group {
  readonly rank: number;
  readonly worldSize: number;
  /** What sums the gradients: 'nccl' (CUDA tensors on this rank's device; the rest over Gloo), 'gloo',
   * or 'none' for a process alone. */
  readonly backend: Backend | 'none';
  /** Sums every tensor across ranks, in place, through one flat buffer (one collective): on the device
   * with NCCL when the tensors are CUDA tensors and the group has NCCL, else on the CPU with Gloo. */
  allReduceSum(tensors: Tensor[]): void;
  /** Every rank's numbers, in rank order (float64: exact for integers below 2^53). */
  allGatherNumbers(values: number[]): number[][];
  /** Every rank's tensor stacked in rank order: [worldSize, ...shape] on the CPU. */
  allGather(t: Tensor): Tensor;
  /** allGather started now and finished (waited for) later, so that work can run meanwhile; `t` may be freed
   * once this returns. Every rank must start its gathers, and other collectives, in the same order. */
  startAllGather(t: Tensor): StartedGather;
  /** Every rank's JSON value, in rank order (results of sharded work). */
  allGatherJson<T>(value: T): T[];
  barrier(): void;
  /** Seconds this process has spent inside collectives (the benchmark's "collective time"). */
  readonly collectiveSeconds: number;
}

/** An all-gather on its way: finish() waits for it and returns [worldSize, ...shape] (the caller's). */
export interface StartedGather {
  finish(): Tensor;
}

/** The group of a process that runs alone. */
export const SOLO: Group = {
  rank: 0,
  worldSize: 1,
  backend: 'none',
  allReduceSum: () => {},
  allGatherNumbers: (values) => [values.slice()],
  allGather: (t) => t.unsqueeze(0).to('cpu'),
  startAllGather: (t) => {
    const all = t.unsqueeze(0).to('cpu').keep();
    return { finish: () => all };
  },
  allGatherJson: (value) => [value],
  barrier: () => {},
  collectiveSeconds: 0,
};

/** Native errors of a collective (a lost peer, a timeout) are the user's to act on, not our bugs. */
function collective<T>(g: { seconds: number }, run: () => T): T {
  const started = performance.now();
  try {
    return run();
  } catch (e) {
    throw new UserError((e as Error).message);
  } finally {
    g.seconds += (performance.now() - started) / 1000;
  }
}

class C10dGroup implements Group {
  seconds = 0;
  constructor(
    readonly rank: number,
    readonly worldSize: number,
    readonly backend: Backend,
  ) {}
  get collectiveSeconds(): number {
    return this.seconds;
  }
  allReduceSum(tensors: Tensor[]): void {
    if (tensors.length > 0) collective(this, () => native.distAllReduceSum(tensors.map((t) => t.id)));
  }
  allGather(t: Tensor): Tensor {
    return collective(this, () => new Tensor(native.distAllGather(t.id)));
  }
  startAllGather(t: Tensor): StartedGather {
    const handle = collective(this, () => native.distAllGatherStart(t.id));
    return { finish: () => collective(this, () => new Tensor(native.distAllGatherFinish(handle))) };
  }
  allGatherNumbers(values: number[]): number[][] {
    const local = tensor(values, { dtype: 'float64' });
    try {
      const all = this.allGather(local); // [W, n]
      try {
        const flat = all.toNumbers();
        return Array.from({ length: this.worldSize }, (_, rank) =>
          flat.slice(rank * values.length, (rank + 1) * values.length),
        );
      } finally {
        all.dispose();
      }
    } finally {
      local.dispose();
    }
  }
  allGatherJson<T>(value: T): T[] {
    const bytes = Buffer.from(JSON.stringify(value) ?? 'null', 'utf8');
    // Lengths first (Gloo gathers equal shapes), then every rank's bytes padded to the longest.
    const longest = Math.max(...this.allGatherNumbers([bytes.length]).map((l) => l[0]!));
    const padded = new Uint8Array(Math.max(1, longest));
    padded.set(bytes);
    const local = fromBytes(padded, 'uint8', [padded.length]);
    try {
      const all = this.allGather(local); // [W, longest]
      try {
        const raw = Buffer.from(all.toTypedArray() as Uint8Array);
        return Array.from({ length: this.worldSize }, (_, rank) => {
          const row = raw.subarray(rank * padded.length, (rank + 1) * padded.length);
          const end = row.indexOf(0);
          return JSON.parse(row.subarray(0, end < 0 ? row.length : end).toString('utf8')) as T;
        });
      } finally {
        all.dispose();
      }
    } finally {
      local.dispose();
    }
  }
  barrier(): void {
    collective(this, () => native.distBarrier());
  }
}

let joined: C10dGroup | null = null;

/** Joins the job described by `env` (rank 0 serves the rendezvous); returns SOLO when env is null.
 * `device`: where this rank trains (after rankDevice): a CUDA device gets NCCL when the addon has it. */
export function joinGroup(env: DistEnv | null, device = 'cpu'): Group {
  if (!env) return SOLO;
  if (joined) return joined;
  const choice = chooseBackend(device, native.ncclInfo().built);
  try {
    native.distInit({
      rank: env.rank,
      worldSize: env.worldSize,
      masterAddr: env.masterAddr,
      masterPort: env.masterPort,
      timeoutMs: env.timeoutMs,
      ...(choice.ncclDevice !== null ? { ncclDevice: choice.ncclDevice } : {}),
    });
  } catch (e) {
    throw new UserError(`${(e as Error).message} (MASTER_ADDR=${env.masterAddr}, MASTER_PORT=${env.masterPort})`);
  }
  joined = new C10dGroup(env.rank, env.worldSize, native.distBackend());
  return joined;
}

/** One line for the log at the start of a job: the ranks and what carries the collectives. */
export function describeGroup(g: Group, device: string): string {
  if (g.backend === 'none') return `running alone on ${device}`;
  const ranks = `rank ${g.rank} of ${g.worldSize}`;
  return g.backend === 'nccl'
    ? `${ranks}: gradients summed with NCCL on ${device}, step statistics and gathers with Gloo`
    : `${ranks}: collectives with Gloo${device === 'cpu' ? '' : ` (${device}'s tensors staged through host memory)`}`;
}

/** Leaves the job after every rank got here (so rank 0's rendezvous outlives the others' last use). */
export function leaveGroup(g: Group): void {
  if (g !== joined || !joined) return;
  joined.barrier();
  native.distDestroy();
  joined = null;
}
