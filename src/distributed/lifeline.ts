// A rank started by `mixlora launch` ends itself when its launcher is gone. The launcher names itself in
// MIXLORA_LAUNCHER_PID; the rank then has the addon watch its parent (native/distributed/lifeline.cc: a thread that
// polls getppid() every second, since the rank's JavaScript may be blocked in a long training step or a
// collective). A launcher ended by SIGINT or SIGTERM ends its ranks itself; one killed by SIGKILL cannot,
// and its ranks would otherwise train on as orphans, holding their GPUs and the rendezvous port.
import { UserError } from '../util/errors.js';

/** The variable through which `mixlora launch` gives its ranks its pid. */
export const LAUNCHER_PID_ENV = 'MIXLORA_LAUNCHER_PID';

/** The message a rank leaves when its launcher is gone. */
export function orphanMessage(rank: string, pid: number): string {
  return `mixlora: rank ${rank}: its launcher (mixlora launch, pid ${pid}) is gone; exiting`;
}

/** Under `mixlora launch`: exit (status 1) once the launcher is gone. Elsewhere nothing. */
export async function watchLauncher(env: NodeJS.ProcessEnv = process.env): Promise<void> {
  const raw = env[LAUNCHER_PID_ENV];
  if (raw === undefined || raw === '') return;
  // not inherited by the processes this rank starts: they are not the launcher's children
  delete env[LAUNCHER_PID_ENV];
  const pid = Number(raw);
  if (!/^\d+$/.test(raw) || !Number.isSafeInteger(pid) || pid <= 1)
    throw new UserError(`${LAUNCHER_PID_ENV}=${raw}: expected the launcher's process id`);
  const rank = env.RANK ?? '?';
  if (process.ppid !== pid) throw new UserError(orphanMessage(rank, pid).replace(/^mixlora: /, ''));
  const { native } = await import('../tensor/native.js');
  native.watchParent(pid, orphanMessage(rank, pid) + '\n');
}
