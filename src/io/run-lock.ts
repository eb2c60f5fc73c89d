// One run per folder: an exclusive lock file created with O_EXCL, holding the owner's pid, host and
// start time. Node has no flock(); a lock left by a process that no longer exists (killed with
// SIGKILL, Ctrl-C, power loss) is taken over after checking that its pid is gone on this host. The lock
// is removed when the run ends or throws, and at process exit (an uncaught error included). There are
// deliberately no signal handlers: the training loop is synchronous, so a JS handler would only run
// after the loop and Ctrl-C would stop killing the run; a run killed by a signal leaves a stale lock,
// which the next run takes over.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { UserError } from '../util/errors.js';
import { writeError } from './atomic.js';

export const LOCK_FILE = '.mixlora.lock';

interface LockInfo {
  pid: number;
  host: string;
  started: string;
}

export interface RunLock {
  file: string;
  release(): void;
}

function readInfo(file: string): LockInfo | null {
  try {
    const v = JSON.parse(fs.readFileSync(file, 'utf8')) as LockInfo;
    return Number.isSafeInteger(v.pid) && typeof v.host === 'string' ? v : null;
  } catch {
    return null;
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM'; // exists, owned by someone else
  }
  return !zombie(pid);
}

/** A killed process whose parent has not reaped it yet still answers kill(pid, 0), but holds nothing
 * (Linux: state Z in /proc/PID/stat, after the parenthesised command name). */
function zombie(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === 'Z';
  } catch {
    return false;
  }
}

/** Whether the lock in `file` was left by a process that is gone (so it may be taken over). */
function isStale(file: string, info: LockInfo | null): boolean {
  if (info === null) {
    // Unreadable: a writer killed between creating and filling it, or a stranger's file. Only an old
    // one is taken over (a live writer fills it within microseconds).
    try {
      return Date.now() - fs.statSync(file).mtimeMs > 10_000;
    } catch {
      return true;
    }
  }
  return info.host === os.hostname() && info.pid !== process.pid && !alive(info.pid);
}

/** Takes the lock of folder `dir` (which must exist); `what` names the run in the error. */
export function acquireRunLock(dir: string, what = 'a training run'): RunLock {
  const file = path.join(dir, LOCK_FILE);
  const mine: LockInfo = { pid: process.pid, host: os.hostname(), started: new Date().toISOString() };
  for (let attempt = 0; ; attempt++) {
    try {
      const fd = fs.openSync(file, 'wx');
      try {
        fs.writeSync(fd, JSON.stringify(mine) + '\n');
      } finally {
        fs.closeSync(fd);
      }
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw writeError(e, file);
      const info = readInfo(file);
      if (attempt < 2 && isStale(file, info)) {
        fs.rmSync(file, { force: true });
        continue;
      }
      const holder = info ? `process ${info.pid} on ${info.host}, since ${info.started}` : 'an unreadable lock file';
      throw new UserError(
        `${dir}: ${what} is already using this folder (${holder}); wait for it to finish, or delete ${file} if that process is gone`,
      );
    }
  }
  let held = true;
  const release = () => {
    if (!held) return;
    held = false;
    process.removeListener('exit', release);
    // Remove only our own lock (never one a later run took over).
    if (readInfo(file)?.pid === mine.pid) fs.rmSync(file, { force: true });
  };
  process.on('exit', release);
  return { file, release };
}
