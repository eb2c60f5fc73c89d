// Reading an adapter folder that a client named (inside --adapter-root) without trusting it: the folder's
// adapter files are copied into a private temporary folder first, each one only if it is a regular file
// whose real path is inside the root, of a bounded size, read asynchronously (a FIFO, a device, a symbolic
// link out of the root or a huge file can neither block the server nor leak what it holds). The loaders
// then read the private copy. Names in errors are relative to the root; no server path reaches a client.
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { CONFIG_FILE, TORCH_WEIGHTS_FILE, WEIGHTS_FILE } from '../adapters/files.js';
import { UserError } from '../util/errors.js';

/** adapter_config.json is a few hundred bytes; this leaves room for long target lists and notes. */
export const CONFIG_LIMIT = 1 << 20;
const CHUNK = 1 << 20;

/** Whether `real` (a resolved path) lies inside `root` (resolved), root itself excluded. */
export function isInside(root: string, real: string): boolean {
  const rel = path.relative(root, real);
  return rel !== '' && !rel.startsWith('..') && !path.isAbsolute(rel);
}

export interface StagedFolder {
  dir: string;
  /** Replaces the private folder's path in a message by the name the client knows. */
  describe(message: string): string;
  remove(): void;
}

/** A private copy of adapter_config.json from `dir` (a folder inside `root`, both real paths); the weight
 * files follow with stageWeights once the config says how large they may be. `shown` names the folder
 * in errors. */
export async function stageConfig(root: string, dir: string, shown: string): Promise<StagedFolder> {
  const tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'mixlora-adapter-'));
  const staged: StagedFolder = {
    dir: tmp,
    describe: (m) => m.replaceAll(tmp, shown),
    remove: () => fs.rmSync(tmp, { recursive: true, force: true }),
  };
  try {
    if (!(await copyIfPresent(root, dir, tmp, CONFIG_FILE, CONFIG_LIMIT, shown)))
      throw new UserError(`${shown}: no ${CONFIG_FILE} (not an adapter folder)`);
    return staged;
  } catch (e) {
    staged.remove();
    throw e;
  }
}

/** Copies the weight files (safetensors preferred, else the PyTorch .bin) of `dir` into the staged folder,
 * each at most `limit` bytes. */
export async function stageWeights(
  root: string,
  dir: string,
  staged: StagedFolder,
  limit: number,
  shown: string,
): Promise<void> {
  if (await copyIfPresent(root, dir, staged.dir, WEIGHTS_FILE, limit, shown)) return;
  if (await copyIfPresent(root, dir, staged.dir, TORCH_WEIGHTS_FILE, limit, shown)) return;
  throw new UserError(`${shown}: no ${WEIGHTS_FILE} or ${TORCH_WEIGHTS_FILE}`);
}

/** Copies dir/name into tmp/name when it exists; false when it does not. */
async function copyIfPresent(
  root: string,
  dir: string,
  tmp: string,
  name: string,
  limit: number,
  shown: string,
): Promise<boolean> {
  const file = path.join(dir, name);
  const where = `${shown}/${name}`;
  let st: fs.Stats;
  try {
    st = await fsp.lstat(file);
  } catch {
    return false;
  }
  let real = file;
  if (st.isSymbolicLink()) {
    try {
      real = await fsp.realpath(file);
    } catch {
      return false; // a dangling link: as if absent
    }
    if (!isInside(root, real))
      throw new UserError(`${where} is a symbolic link out of the adapter root; only files inside it are read`);
    st = await fsp.stat(real);
  }
  if (!st.isFile()) throw new UserError(`${where} is not a regular file`);
  if (st.size > limit) throw new UserError(`${where} is ${st.size} bytes, more than this adapter can hold (${limit})`);
  // O_NOFOLLOW: the file cannot be swapped for a link between the checks and the open; O_NONBLOCK: nor
  // for a FIFO that would block the open.
  const handle = await fsp.open(real, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
  const out = await fsp.open(path.join(tmp, name), 'wx', 0o600);
  try {
    const opened = await handle.stat();
    if (!opened.isFile()) throw new UserError(`${where} is not a regular file`);
    const buf = Buffer.allocUnsafe(CHUNK);
    let total = 0;
    for (;;) {
      const { bytesRead } = await handle.read(buf, 0, CHUNK, null);
      if (bytesRead === 0) break;
      total += bytesRead;
      if (total > limit) throw new UserError(`${where} grew past ${limit} bytes while it was read`);
      await out.write(buf, 0, bytesRead);
    }
  } finally {
    await handle.close();
    await out.close();
  }
  return true;
}
