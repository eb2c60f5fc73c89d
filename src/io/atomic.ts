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

/** The real path of `p` (symbolic links followed), or of its nearest existing parent joined with the rest. */
export function realPathOf(p: string): string {
  const abs = path.resolve(p);
  if (fs.existsSync(abs)) return fs.realpathSync(abs);
  const parent = path.dirname(abs);
  return parent === abs ? abs : path.join(realPathOf(parent), path.basename(abs));
}

/** Whether `child` is `parent` or inside it (both absolute). */
export function isInside(parent: string, child: string): boolean {
  const rel = path.relative(parent, child);
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
}

/** Checks the output folder of a command (`flag` names it) before anything is read or written: not a
 * file-system root, neither one of the command's `inputs` (those that exist) nor a folder holding one,
 * and when it exists,
 * replaced only with `replace` and only when it holds nothing but the files the command writes
 * (`owned`, e.g. an earlier output of the same command). Changes nothing. */
export function checkOutputFolder(
  target: string,
  opts: { flag: string; replace: boolean; owned: readonly string[]; inputs: readonly string[] },
): void {
  const real = realPathOf(target);
  if (path.dirname(real) === real)
    throw new UserError(
      `${opts.flag} ${target}: is a file-system root; give a folder of its own (nothing was changed)`,
    );
  for (const input of opts.inputs) {
    if (!fs.existsSync(input)) continue; // a model id, or a missing file the command names later
    const r = realPathOf(input);
    if (isInside(real, r))
      throw new UserError(
        `${opts.flag} ${target}: ${r === real ? 'is' : 'contains'} ${input}, an input of this command; give a folder of its own (nothing was changed)`,
      );
  }
  let st: fs.Stats;
  try {
    st = fs.lstatSync(target);
  } catch {
    return; // a new folder
  }
  if (!opts.replace) throw new UserError(`${target}: already exists (use --force to replace it; nothing was changed)`);
  if (!st.isDirectory()) throw new UserError(`${target}: exists and is not a folder; not replacing it`);
  checkReplaceable(target, new Set(opts.owned));
}

/** Builds a folder under a temporary name with `fill(dir)`, then renames it to `target` (which must
 * not exist, or is replaced when `replace`; only when it holds nothing but files of the kind `fill`
 * writes, or those named in `owned`). Readers see either no folder or a complete one. A file-system
 * root is refused (its temporary folder would be made beside it, in itself). */
export function writeDirAtomic(
  target: string,
  fill: (dir: string) => void,
  opts: { replace?: boolean; owned?: readonly string[] } = {},
): void {
  const abs = path.resolve(target);
  if (path.dirname(abs) === abs) throw new UserError(`${target}: is a file-system root; not writing a folder there`);
  try {
    fs.mkdirSync(path.dirname(abs), { recursive: true });
  } catch (e) {
    throw writeError(e, target);
  }
  const tmp = tempName(abs);
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
    if (fs.existsSync(abs)) {
      if (!opts.replace) throw new UserError(`${target}: already exists (nothing was changed)`);
      checkReplaceable(target, new Set([...fs.readdirSync(tmp), ...(opts.owned ?? [])]));
      const old = tempName(abs);
      fs.renameSync(abs, old);
      fs.renameSync(tmp, abs);
      fs.rmSync(old, { recursive: true, force: true });
    } else {
      fs.renameSync(tmp, abs);
    }
    fsyncDir(path.dirname(abs));
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw writeError(e, target);
  }
}
