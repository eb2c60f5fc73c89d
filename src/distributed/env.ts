// Where this process stands in a data-parallel job, from the variables every launcher sets (torchrun,
// Slurm wrappers, `mixlora launch`): https://pytorch.org/docs/stable/elastic/run.html#environment-variables.
// Without WORLD_SIZE (or with WORLD_SIZE=1) the process runs alone, exactly as a plain `mixlora train`;
// MIXLORA_DIST_FORCE_GROUP=1 makes WORLD_SIZE=1 a real one-rank group (the tests and the GPU check use it
// to run a training through c10d, e.g. ProcessGroupNCCL on a machine with one GPU).
import { UserError } from '../util/errors.js';

export interface DistEnv {
  rank: number;
  worldSize: number;
  /** This process's index among the ranks of its machine (picks cuda:LOCAL_RANK). */
  localRank: number;
  localWorldSize: number;
  masterAddr: string;
  masterPort: number;
  /** How long a collective or the rendezvous may wait for a peer before failing. */
  timeoutMs: number;
}

/** MIXLORA_DIST_TIMEOUT's default, in seconds: long enough for rank 0 to write a checkpoint or
 * evaluate while the others wait at the next collective (a dead peer on a live host is seen at once). */
export const DEFAULT_TIMEOUT_S = 600;

function integer(env: NodeJS.ProcessEnv, name: string, min: number, max = Number.MAX_SAFE_INTEGER): number | null {
  const raw = env[name];
  if (raw === undefined || raw === '') return null;
  const n = Number(raw);
  if (!/^\s*\d+\s*$/.test(raw) || !Number.isSafeInteger(n) || n < min || n > max)
    throw new UserError(`${name}=${raw}: expected an integer from ${min} to ${max}`);
  return n;
}

/** The job this process belongs to, or null when it runs alone. */
export function readDistEnv(env: NodeJS.ProcessEnv = process.env): DistEnv | null {
  const worldSize = integer(env, 'WORLD_SIZE', 1);
  if (worldSize === null || (worldSize === 1 && env.MIXLORA_DIST_FORCE_GROUP !== '1')) return null;
  const rank = integer(env, 'RANK', 0, worldSize - 1);
  if (rank === null)
    throw new UserError(`WORLD_SIZE=${worldSize} but RANK is not set: set RANK to 0..${worldSize - 1}`);
  const localWorldSize = integer(env, 'LOCAL_WORLD_SIZE', 1, worldSize) ?? 1;
  const localRank = integer(env, 'LOCAL_RANK', 0, worldSize - 1) ?? 0;
  if (localRank >= localWorldSize && env.LOCAL_WORLD_SIZE)
    throw new UserError(`LOCAL_RANK=${localRank} must be below LOCAL_WORLD_SIZE=${localWorldSize}`);
  const masterAddr = env.MASTER_ADDR?.trim() || null;
  if (!masterAddr) throw new UserError(`WORLD_SIZE=${worldSize} but MASTER_ADDR is not set: the address of rank 0`);
  const masterPort = integer(env, 'MASTER_PORT', 1, 65535);
  if (masterPort === null)
    throw new UserError(`WORLD_SIZE=${worldSize} but MASTER_PORT is not set: a free port on rank 0's machine`);
  const timeoutS = integer(env, 'MIXLORA_DIST_TIMEOUT', 1, 86400) ?? DEFAULT_TIMEOUT_S;
  return { rank, worldSize, localRank, localWorldSize, masterAddr, masterPort, timeoutMs: timeoutS * 1000 };
}
