// Writing files so that a crash never leaves a file (or folder) that looks complete but is not:
// write beside the target under a temporary name, fsync, rename over, fsync the folder.
import fs from 'node:fs';
import path from 'node:path';
import { UserError } from '../util/errors.js';

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

/** Writes a file through `write(fd)` atomically. */
export function writeAtomic(target: string, write: (fd: number) => void): void {
  fs.mkdirSync(path.dirname(target), { recursive: true });
  const tmp = tempName(target);
  const fd = fs.openSync(tmp, 'w');
  try {
    write(fd);
    fs.fsyncSync(fd);
  } catch (e) {
    fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    throw e;
  }
  fs.closeSync(fd);
  fs.renameSync(tmp, target);
  fsyncDir(path.dirname(target));
}

export function writeFileAtomic(target: string, data: string | Uint8Array): void {
  writeAtomic(target, (fd) => writeAll(fd, typeof data === 'string' ? Buffer.from(data) : data));
}

export function writeAll(fd: number, data: Uint8Array): void {
  let off = 0;
  while (off < data.length) off += fs.writeSync(fd, data, off, data.length - off);
}

/** Builds a folder under a temporary name with `fill(dir)`, then renames it to `target` (which must
 * not exist, or is replaced when `replace`). Readers see either no folder or a complete one. */
export function writeDirAtomic(target: string, fill: (dir: string) => void, opts: { replace?: boolean } = {}): void {
  fs.mkdirSync(path.dirname(target), { recursive: true });
  const tmp = tempName(target);
  fs.mkdirSync(tmp);
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
      if (!opts.replace)
        throw new UserError(`${target} already exists: mixlora does not overwrite it (choose another path)`);
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
    throw e;
  }
}
