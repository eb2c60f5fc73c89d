// Running bin/mixlora as a user would (with the Node flags of its first line).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { NODE_FLAGS } from '../../src/util/node-flags.js';
import { MIXLORA_BIN } from './fixtures.js';

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export function mixlora(args: string[], opts: { input?: string; env?: Record<string, string> } = {}): CliResult {
  const r = spawnSync(process.execPath, [...NODE_FLAGS, MIXLORA_BIN, ...args], {
    encoding: 'utf8',
    input: opts.input,
    env: { ...process.env, ...opts.env },
    maxBuffer: 1 << 26,
  });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** Starts `args` in the background, in a process group of its own (so that a launcher can be killed with its
 * ranks); `exit` resolves when it exits, or rejects once `limitMs` has passed (it is killed then). */
export function spawnMixlora(
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; limitMs?: number } = {},
): { child: ChildProcess; exit: Promise<{ code: number | null; stderr: string }> } {
  const limitMs = opts.limitMs ?? 60_000;
  const child = spawn(process.execPath, [...NODE_FLAGS, MIXLORA_BIN, ...args], {
    env: opts.env ?? process.env,
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  child.stdout!.resume();
  const exit = new Promise<{ code: number | null; stderr: string }>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${args.join(' ')} did not exit within ${limitMs / 1000} s; stderr: ${stderr}`));
    }, limitMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stderr });
    });
  });
  return { child, exit };
}
