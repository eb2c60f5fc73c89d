// `mixlora launch`: starts this machine's ranks of a data-parallel job, the way torchrun's static
// rendezvous does (https://pytorch.org/docs/stable/elastic/run.html): each rank is a child process of
// bin/mixlora with RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT set.
// Every line a rank prints is prefixed with its rank; SIGINT/SIGTERM are passed on; the first rank
// that fails ends the others, and the launcher exits with its code. The ranks get the launcher's pid
// (MIXLORA_LAUNCHER_PID) and end themselves within a second or two if it is killed (lifeline.ts).
//
// The ranks start one after another, the launcher handling signals in between: after a SIGINT/SIGTERM
// (or a rank's failure) no further rank starts, and every rank started so far gets the signal, also one
// still starting (Node's default action for SIGTERM and SIGINT ends a process that has not yet set up
// anything). The ranks stay in the launcher's process group, so that Ctrl-C in a terminal or a kill of
// the group (`kill -- -PGID`, a job scheduler) reaches them directly too.
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import readline from 'node:readline';
import { readConfigFile } from '../util/config-file.js';
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

/** The device the ranks of `command` run on (before rankDevice): train's `device` in its config (cpu
 * when the config cannot be read: the ranks will say why), eval's and bench's --device (default cpu). */
export function launchedDevice(command: string[]): string {
  const args = command.slice(1);
  if (command[0] === 'train') {
    const config = args.find((a, i) => !a.startsWith('-') && args[i - 1] !== '--threads');
    try {
      const value = config === undefined ? null : readConfigFile(config).value;
      const device = value && typeof value === 'object' ? (value as Record<string, unknown>).device : undefined;
      return typeof device === 'string' ? device : 'cpu';
    } catch {
      return 'cpu';
    }
  }
  let device = 'cpu';
  for (const [i, a] of args.entries()) {
    if (a === '--device' && args[i + 1] !== undefined) device = args[i + 1]!;
    else if (a.startsWith('--device=')) device = a.slice('--device='.length);
  }
  return device;
}

/** Why `n` ranks on this machine are too many for `device` (null when they are not): more than its cores on
 * cpu, more than its CUDA devices with `cuda` (each rank takes cuda:LOCAL_RANK), more than one with cuda:N
 * (every rank would share it). Starting more only thrashes or exhausts memory, and NCCL refuses two ranks
 * on one GPU. */
export function tooManyRanks(
  n: number,
  device: string,
  machine: { cores: number; cudaDevices: number },
): string | null {
  const advice = 'or pass --oversubscribe to start them anyway';
  if (device === 'cuda') {
    const gpus = machine.cudaDevices;
    if (n <= gpus) return null;
    if (gpus === 0)
      return `--nproc-per-node ${n}: the ranks run on CUDA (one device each), and this machine has no CUDA device (or this addon no CUDA: see \`mixlora info\`); ${advice}`;
    return `--nproc-per-node ${n}: the ranks run on CUDA (one device each), and this machine has ${gpus} CUDA device${gpus === 1 ? '' : 's'}; start at most ${gpus}, ${advice}`;
  }
  if (/^cuda:\d+$/.test(device)) {
    if (n <= 1) return null;
    return `--nproc-per-node ${n}: every rank would run on ${device} (NCCL refuses two ranks on one GPU); use device cuda for one device per rank, start 1, ${advice}`;
  }
  if (n <= machine.cores) return null;
  return `--nproc-per-node ${n}: more ranks than this machine's ${machine.cores} cores (the ranks run on ${device}); start at most ${machine.cores}, ${advice}`;
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
  /** A signal came or a rank failed: no further rank starts. */
  let stopping = false;
  let signalled = false;

  const signalRanks = (signal: NodeJS.Signals) => {
    for (const { child } of children) {
      if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) continue;
      try {
        process.kill(child.pid, signal);
      } catch {
        // gone in the meantime
      }
    }
  };
  const endOthers = (signal: NodeJS.Signals) => {
    stopping = true;
    signalRanks(signal);
    killTimer ??= setTimeout(() => signalRanks('SIGKILL'), GRACE_MS);
    killTimer.unref();
  };
  const forward = (signal: NodeJS.Signals) => () => {
    // Said once: a second signal (Ctrl-C after a SIGTERM) is passed on as well, without a second line.
    if (!signalled) o.log(`mixlora launch: ${signal}: passing it on to the ranks`);
    signalled = true;
    failure ??= { rank: -1, code: 128 + (signal === 'SIGINT' ? 2 : 15) };
    endOthers(signal);
  };
  const onInt = forward('SIGINT');
  const onTerm = forward('SIGTERM');
  process.on('SIGINT', onInt);
  process.on('SIGTERM', onTerm);

  const startRank = (localRank: number): Promise<void> => {
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
  };
  const exits: Promise<void>[] = [];
  try {
    for (let localRank = 0; localRank < o.nprocPerNode && !stopping; localRank++) {
      exits.push(startRank(localRank));
      // Signals and the exits of the ranks started so far are handled here, before the next rank starts.
      await new Promise((resolve) => setImmediate(resolve));
    }
    if (exits.length < o.nprocPerNode)
      o.log(`mixlora launch: ${o.nprocPerNode - exits.length} of ${o.nprocPerNode} ranks not started`);
    await Promise.all(exits);
  } finally {
    process.off('SIGINT', onInt);
    process.off('SIGTERM', onTerm);
    if (killTimer) clearTimeout(killTimer);
  }
  const failed = failure as { rank: number; code: number } | null;
  return failed ? failed.code : 0;
}
