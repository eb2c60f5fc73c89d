// Which c10d backend a rank's collectives use, as torch.distributed picks it for "cpu:gloo,cuda:nccl":
// a rank training on CUDA sums its gradients with NCCL on its own device when the addon has
// ProcessGroupNCCL (a CUDA build with NCCL's headers); otherwise Gloo, which stages CUDA tensors through
// host memory. Small CPU exchanges (step statistics, gathers, barriers) always go through Gloo.
// MIXLORA_DIST_BACKEND=gloo forces Gloo (e.g. to rule NCCL out); =nccl insists on NCCL.
import { UserError } from '../util/errors.js';
import type { DistEnv } from './env.js';

export type Backend = 'gloo' | 'nccl';

export interface BackendChoice {
  backend: Backend;
  /** The CUDA device index NCCL runs on (null with Gloo). */
  ncclDevice: number | null;
}

/** The device a rank trains on: `cuda` becomes cuda:LOCAL_RANK under a launcher (one GPU per local rank);
 * an explicit cuda:N or cpu stays as given. */
export function rankDevice(device: string, env: DistEnv | null): string {
  return env && device === 'cuda' ? `cuda:${env.localRank}` : device;
}

/** The backend for a rank on `device` (after rankDevice). `ncclBuilt`: the addon has ProcessGroupNCCL. */
export function chooseBackend(device: string, ncclBuilt: boolean, env: NodeJS.ProcessEnv = process.env): BackendChoice {
  const asked = env.MIXLORA_DIST_BACKEND?.trim() || 'auto';
  if (!['auto', 'gloo', 'nccl'].includes(asked))
    throw new UserError(`MIXLORA_DIST_BACKEND=${asked}: expected gloo, nccl or auto`);
  const cuda = /^cuda(:\d+)?$/.exec(device);
  if (asked === 'nccl' && !cuda)
    throw new UserError(`MIXLORA_DIST_BACKEND=nccl: NCCL needs a CUDA device, but this rank runs on ${device}`);
  if (asked === 'nccl' && !ncclBuilt)
    throw new UserError(
      "MIXLORA_DIST_BACKEND=nccl: this addon has no NCCL (a CPU build, or CUDA's or NCCL's headers were not found when it was built; see `mixlora info`)",
    );
  if (asked === 'gloo' || !cuda || !ncclBuilt) return { backend: 'gloo', ncclDevice: null };
  return { backend: 'nccl', ncclDevice: cuda[1] ? Number(cuda[1].slice(1)) : 0 };
}
