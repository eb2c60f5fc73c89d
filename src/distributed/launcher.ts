// `mixlora launch`: starts this machine's ranks of a data-parallel job, the way torchrun's static
// rendezvous does (https://pytorch.org/docs/stable/elastic/run.html): each rank is a child process of
// bin/mixlora with RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT set.
// Every line a rank prints is prefixed with its rank; SIGINT/SIGTERM are passed on; the first rank
// that fails ends the others, and the launcher exits with its code. The ranks get the launcher's pid
// (MIXLORA_LAUNCHER_PID) and end themselves within a second or two if it is killed (lifeline.ts).
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import readline from 'node:readline';
import { UserError } from '../util/errors.js';
import { NODE_FLAGS } from '../util/node-flags.js';
import { LAUNCHER_PID_ENV } from './lifeline.js';

export interface LaunchOptions {
  nprocPerNode: number;
  nnodes: number;
  nodeRank: number;
  masterAddr: string;
  /** null: pick a free port on this machine (one machine only). */
  masterPort: number | null;
  /** The mixlora command each rank runs, e.g. ['train', 'config.yaml', '--resume']. */
  command: string[];
  /** The script the ranks run (bin/mixlora). */
  entry: string;
  log: (line: string) => void;
}

/** How long ranks get to exit after SIGTERM before SIGKILL. */
const GRACE_MS = 10_000;

/** A port nobody listens on right now (the OS picks it); the ranks bind it a moment later. */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, host, () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

function describeExit(code: number | null, signal: NodeJS.Signals | null): string {
  return signal ? `was killed by ${signal}` : `exited with code ${code}`;
}

/** Runs the ranks to the end; resolves with the launcher's exit code. */
export async function launch(o: LaunchOptions): Promise<number> {
  if (o.nnodes > 1 && o.masterPort === null)
    throw new UserError('--nnodes > 1 needs --master-port (or MASTER_PORT): every machine must name the same port');
  const port = o.masterPort ?? (await freePort());
  const worldSize = o.nprocPerNode * o.nnodes;
  const children: { rank: number; child: ChildProcess }[] = [];
  let failure: { rank: number; code: number } | null = null;
  let killTimer: NodeJS.Timeout | null = null;

  const endOthers = (signal: NodeJS.Signals) => {
    for (const { child } of children) if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    killTimer ??= setTimeout(() => {
      for (const { child } of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }, GRACE_MS);
    killTimer.unref();
  };
  const forward = (signal: NodeJS.Signals) => () => {
    o.log(`mixlora launch: ${signal}: passing it on to the ranks`);
    failure ??= { rank: -1, code: 128 + (signal === 'SIGINT' ? 2 : 15) };
    endOthers(signal);
  };
  const onInt = forward('SIGINT');
  const onTerm = forward('SIGTERM');
  process.on('SIGINT', onInt);
  process.on('SIGTERM', onTerm);

  const exits = Array.from({ length: o.nprocPerNode }, (_, localRank) => {
    const rank = o.nodeRank * o.nprocPerNode + localRank;
    const child = spawn(process.execPath, [...NODE_FLAGS, o.entry, ...o.command], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: {
        ...process.env,
        RANK: String(rank),
        WORLD_SIZE: String(worldSize),
        LOCAL_RANK: String(localRank),
        LOCAL_WORLD_SIZE: String(o.nprocPerNode),
        GROUP_RANK: String(o.nodeRank),
        MASTER_ADDR: o.masterAddr,
        MASTER_PORT: String(port),
        [LAUNCHER_PID_ENV]: String(process.pid),
      },
    });
    children.push({ rank, child });
    o.log(`mixlora launch: rank ${rank} started (pid ${child.pid})`);
    const prefix = `[rank ${rank}] `;
    readline.createInterface({ input: child.stdout! }).on('line', (l) => process.stdout.write(prefix + l + '\n'));
    readline.createInterface({ input: child.stderr! }).on('line', (l) => process.stderr.write(prefix + l + '\n'));
    return new Promise<void>((resolve) => {
      child.on('error', (e) => {
        o.log(`mixlora launch: rank ${rank} could not start (${e.message})`);
        failure ??= { rank, code: 1 };
        endOthers('SIGTERM');
        resolve();
      });
      child.on('close', (code, signal) => {
        if ((code !== 0 || signal) && !failure) {
          failure = { rank, code: code && code > 0 ? code : 1 };
          o.log(`mixlora launch: rank ${rank} ${describeExit(code, signal)}; ending the other ranks`);
          endOthers('SIGTERM');
        }
        resolve();
      });
    });
  });
  try {
    await Promise.all(exits);
  } finally {
    process.off('SIGINT', onInt);
    process.off('SIGTERM', onTerm);
    if (killTimer) clearTimeout(killTimer);
  }
  const failed = failure as { rank: number; code: number } | null;
  return failed ? failed.code : 0;
}
