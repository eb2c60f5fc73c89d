// Following metrics.jsonl files as they grow: new complete lines are sent as they appear; a file that was
// replaced or cut (a resumed run cuts it back to its checkpoint's step) is read again from its start.
import fs from 'node:fs';

export interface FollowUpdate {
  /** The file was replaced or shortened: forget its earlier lines. */
  reset: boolean;
  lines: Record<string, unknown>[];
}

export class FileFollower {
  private offset = 0;
  private ino = -1;
  private partial = '';

  constructor(readonly file: string) {}

  /** The lines added since the last call (all of them on the first), or null when nothing changed. */
  poll(): FollowUpdate | null {
    let st: fs.Stats;
    try {
      st = fs.statSync(this.file);
    } catch {
      if (this.ino === -1 && this.offset === 0) return null;
      this.ino = -1;
      this.offset = 0;
      this.partial = '';
      return { reset: true, lines: [] };
    }
    let reset = false;
    if (st.ino !== this.ino || st.size < this.offset) {
      reset = this.ino !== -1 || this.offset > 0;
      this.ino = st.ino;
      this.offset = 0;
      this.partial = '';
    }
    if (st.size === this.offset) return reset ? { reset, lines: [] } : null;
    const fd = fs.openSync(this.file, 'r');
    let text: string;
    try {
      const buf = Buffer.alloc(st.size - this.offset);
      const n = fs.readSync(fd, buf, 0, buf.length, this.offset);
      this.offset += n;
      text = this.partial + buf.subarray(0, n).toString('utf8');
    } finally {
      fs.closeSync(fd);
    }
    const parts = text.split('\n');
    this.partial = parts.pop()!;
    const lines: Record<string, unknown>[] = [];
    for (const p of parts) {
      if (!p.trim()) continue;
      try {
        lines.push(JSON.parse(p) as Record<string, unknown>);
      } catch {
        // not a metrics line
      }
    }
    return { reset, lines };
  }
}
