// A two-rank `mixlora launch` training job for the launcher tests: started, and followed until both
// ranks are training.
import { spawn, type ChildProcess } from 'node:child_process';
import { MIXLORA_BIN } from './fixtures.js';
import { longTrainingRun } from './train.js';

export interface LaunchedJob {
  job: ChildProcess;
  /** Rank -> pid, as the launcher reported them. */
  pids: Map<number, number>;
  /** What the launcher has printed on stderr so far. */
  stderr(): string;
  /** Resolves with the launcher's exit code. */
  exited: Promise<number | null>;
}

/** `mixlora launch --nproc-per-node 2 train` of a long run; resolves once both ranks have started and
 * rank 0 has described its adapter (every rank joined the group and set up), or the launcher exited. */
export async function launchTwoRankTraining(): Promise<LaunchedJob> {
  const job = spawn(
    process.execPath,
    [MIXLORA_BIN, 'launch', '--oversubscribe', '--nproc-per-node', '2', 'train', longTrainingRun().file],
    {
      stdio: ['ignore', 'ignore', 'pipe'],
    },
  );
  let stderr = '';
  const pids = new Map<number, number>();
  const training = new Promise<void>((resolve) =>
    job.stderr!.on('data', (d: Buffer) => {
      stderr += d.toString();
      for (const m of stderr.matchAll(/rank (\d) started \(pid (\d+)\)/g)) pids.set(Number(m[1]), Number(m[2]));
      if (pids.size === 2 && /\[rank 0\] .*trainable parameters/.test(stderr)) resolve();
    }),
  );
  const exited = new Promise<number | null>((resolve) => job.on('close', (code) => resolve(code)));
  await Promise.race([training, exited]);
  return { job, pids, stderr: () => stderr, exited };
}
