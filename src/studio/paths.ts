// Which files the studio may touch. Everything a page names (a model, a data file, a run, an adapter) is
// resolved here: a path inside --runs (read and write), inside a folder given with --folder, or inside the
// package's bundled assets (read only). A path outside them, through '..', an absolute path or a symbolic
// link out, gets the answer of a path that does not exist: a page learns nothing about other files.
import fs from 'node:fs';
import path from 'node:path';
import { isInside } from '../io/atomic.js';
import { packageRoot } from '../util/package.js';
import { ApiError } from '../serve/errors.js';

export interface Root {
  /** How pages name it: `runs`, the folder's own name, or `bundled`. */
  name: string;
  /** Its real path. */
  dir: string;
  writable: boolean;
}

export class Confinement {
  readonly roots: Root[];

  constructor(
    readonly runsDir: string,
    folders: string[],
  ) {
    const bundled = path.join(packageRoot(), 'assets');
    const used = new Set(['runs', 'bundled']);
    const extra = folders.map((f) => {
      let name = path.basename(path.resolve(f)) || 'folder';
      for (let k = 2; used.has(name); k++) name = `${path.basename(path.resolve(f))}-${k}`;
      used.add(name);
      return { name, dir: fs.realpathSync(f), writable: false };
    });
    this.roots = [
      { name: 'runs', dir: fs.realpathSync(runsDir), writable: true },
      ...extra,
      { name: 'bundled', dir: fs.realpathSync(bundled), writable: false },
    ];
  }

  get runs(): string {
    return this.roots[0]!.dir;
  }

  /** The real path of `p` (absolute, or relative to the runs folder) when it exists inside a root; else
   * null. `write` asks for a path inside the runs folder (it need not exist; its parent must). */
  resolve(p: string, opts: { write?: boolean } = {}): string | null {
    if (typeof p !== 'string' || p === '' || p.includes('\0')) return null;
    const abs = path.resolve(this.runs, p);
    let real: string;
    try {
      real = fs.realpathSync(abs);
    } catch {
      if (!opts.write) return null;
      try {
        real = path.join(fs.realpathSync(path.dirname(abs)), path.basename(abs));
      } catch {
        return null;
      }
    }
    const root = this.roots.find((r) => isInside(r.dir, real));
    if (!root || (opts.write && !root.writable)) return null;
    return real;
  }

  /** As resolve, or a 404 naming `what` as the page gave it. */
  require(p: string, what: string, opts: { write?: boolean } = {}): string {
    const real = this.resolve(p, opts);
    if (real === null)
      throw new ApiError(
        404,
        `${what} '${p}' not found in the folders this studio may ${opts.write ? 'write' : 'read'}`,
        'not_found_error',
        what,
        'not_found',
      );
    return real;
  }

  /** How a page sees a real path: `runs/…`, `<folder>/…`, `bundled/…` (never the machine's path). */
  show(real: string): string {
    const root = this.roots.find((r) => isInside(r.dir, real));
    if (!root) return path.basename(real);
    const rel = path.relative(root.dir, real);
    return rel === '' ? root.name : `${root.name}/${rel.split(path.sep).join('/')}`;
  }

  /** The real path a shown name (`runs/x`, `bundled/…`) or a path names, confined. */
  fromShown(p: string): string | null {
    const slash = p.indexOf('/');
    const head = slash < 0 ? p : p.slice(0, slash);
    const root = this.roots.find((r) => r.name === head);
    if (root) {
      const real = this.resolve(path.join(root.dir, slash < 0 ? '' : p.slice(slash + 1)));
      return real !== null && isInside(root.dir, real) ? real : null;
    }
    return this.resolve(p);
  }

  /** Files under the roots whose names match `pattern` (at most `max`, `depth` folders down), shown. */
  list(pattern: RegExp, opts: { depth?: number; max?: number; dirs?: boolean } = {}): string[] {
    const out: string[] = [];
    const max = opts.max ?? 500;
    const walk = (dir: string, depth: number) => {
      let entries: fs.Dirent[];
      try {
        entries = fs.readdirSync(dir, { withFileTypes: true });
      } catch {
        return;
      }
      entries.sort((a, b) => a.name.localeCompare(b.name));
      for (const e of entries) {
        if (out.length >= max || e.name.startsWith('.') || e.name === 'node_modules') continue;
        const p = path.join(dir, e.name);
        if (e.isDirectory()) {
          if (opts.dirs && pattern.test(e.name)) out.push(this.show(p));
          if (depth > 0) walk(p, depth - 1);
        } else if (e.isFile() && !opts.dirs && pattern.test(e.name)) out.push(this.show(p));
      }
    };
    for (const r of this.roots) walk(r.dir, opts.depth ?? 3);
    return out;
  }
}
