// Writing files so that a crash never leaves a file (or folder) that looks complete but is not:
// write beside the target under a temporary name, fsync, rename over, fsync the folder.
import fs from 'node:fs';
import path from 'node:path';
import { UserError } from '../util/errors.js';

/** Names `tempName` gives: what a killed write leaves behind (ours to remove). */
export const TEMP_NAME = /^\..+\.tmp-\d+-[a-z0-9]+$/;

function tempName(target: string): string {
  return path.join(
    path.dirname(target),
    `.${path.basename(target)}.tmp-${process.pid}-${Math.random().toString(36).slice(2, 8)}`,
  );
}

function fsyncDir(dir: string): void {
  const fd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** A file-system error as one line naming the file (disk full, read-only folder, no permission);
 * other errors pass through unchanged. */
export function writeError(e: unknown, target: string): unknown {
  const code = (e as NodeJS.ErrnoException).code;
  if (e instanceof UserError || typeof code !== 'string') return e;
  const why: Record<string, string> = {
    ENOSPC: 'no space left on the device',
    EDQUOT: 'disk quota exceeded',
    EROFS: 'read-only file system',
    EACCES: 'permission denied',
    EPERM: 'operation not permitted',
    ENOTDIR: 'a parent is not a folder',
    EISDIR: 'is a folder',
    EEXIST: 'already exists',
    ENAMETOOLONG: 'name too long',
  };
  return new UserError(`${target}: cannot write (${code}${why[code] ? `: ${why[code]}` : ''})`);
}

/** Writes a file through `write(fd)` atomically. */
export function writeAtomic(target: string, write: (fd: number) => void): void {
  let tmp: string | null = null;
  try {
    fs.mkdirSync(path.dirname(target), { recursive: true });
    tmp = tempName(target);
    const fd = fs.openSync(tmp, 'w');
    try {
      write(fd);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, target);
    tmp = null;
    fsyncDir(path.dirname(target));
  } catch (e) {
    if (tmp) fs.rmSync(tmp, { force: true });
    throw writeError(e, target);
  }
}

/** Appends to a file, with errors naming it. */
export function appendFileChecked(target: string, data: string): void {
  try {
    fs.appendFileSync(target, data);
  } catch (e) {
    throw writeError(e, target);
  }
}

export function writeFileAtomic(target: string, data: string | Uint8Array): void {
  writeAtomic(target, (fd) => writeAll(fd, typeof data === 'string' ? Buffer.from(data) : data));
}

export function writeAll(fd: number, data: Uint8Array): void {
  let off = 0;
  while (off < data.length) off += fs.writeSync(fd, data, off, data.length - off);
}

/** Refuses to replace `target` unless every entry in it is a plain file this writer writes (`owned`)
 * or a temporary file of an interrupted write: replacing a folder never removes a file the tool did
 * not create. */
export function checkReplaceable(target: string, owned: ReadonlySet<string>): void {
  const st = fs.lstatSync(target);
  if (!st.isDirectory()) throw new UserError(`${target}: exists and is not a folder; not replacing it`);
  for (const e of fs.readdirSync(target, { withFileTypes: true })) {
    if (TEMP_NAME.test(e.name)) continue;
    if (!owned.has(e.name) || !e.isFile())
      throw new UserError(
        `${target}: holds '${e.name}', which mixlora did not write; not replacing the folder (move that file away, or choose another folder)`,
      );
  }
}

/** Builds a folder under a temporary name with `fill(dir)`, then renames it to `target` (which must
 * not exist, or is replaced when `replace`; only when it holds nothing but files of the kind `fill`
 * writes, or those named in `owned`). Readers see either no folder or a complete one. */
export function writeDirAtomic(
  target: string,
  fill: (dir: string) => void,
  opts: { replace?: boolean; owned?: readonly string[] } = {},
): void {
  try {
    fs.mkdirSync(path.dirname(target), { recursive: true });
  } catch (e) {
    throw writeError(e, target);
  }
  const tmp = tempName(target);
  try {
    fs.mkdirSync(tmp);
  } catch (e) {
    throw writeError(e, target);
  }
  try {
    fill(tmp);
    for (const f of fs.readdirSync(tmp)) {
      const p = path.join(tmp, f);
      if (fs.statSync(p).isFile()) {
        const fd = fs.openSync(p, 'r+');
        try {
          fs.fsyncSync(fd);
        } finally {
          fs.closeSync(fd);
        }
      }
    }
    fsyncDir(tmp);
    if (fs.existsSync(target)) {
      if (!opts.replace) throw new UserError(`${target}: already exists (nothing was changed)`);
      checkReplaceable(target, new Set([...fs.readdirSync(tmp), ...(opts.owned ?? [])]));
      const old = tempName(target);
      fs.renameSync(target, old);
      fs.renameSync(tmp, target);
      fs.rmSync(old, { recursive: true, force: true });
    } else {
      fs.renameSync(tmp, target);
    }
    fsyncDir(path.dirname(target));
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw writeError(e, target);
  }
}
