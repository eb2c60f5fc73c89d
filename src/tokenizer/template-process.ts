// The child process that renders chat templates (template-child.ts), driven from template-render.ts: one
// job at a time, each under a time limit, a heap limit and an output limit. The child starts on first use,
// starts again after it died (a template that exhausted its heap ends the child, never this process),
// and never keeps this process alive while it is idle.
import { spawn, type ChildProcess } from 'node:child_process';
import type { Socket } from 'node:net';
import { fileURLToPath } from 'node:url';

export interface TemplateLimits {
  /** Time one rendering may take. */
  seconds: number;
  /** The child's JavaScript heap (--max-old-space-size). */
  heapMb: number;
  /** Characters of output. */
  maxChars: number;
}

export interface TemplateJob {
  id: number;
  template: string;
  context: Record<string, unknown>;
  seconds: number;
  maxChars: number;
}

/** What the child answers: the text, or why there is none (`kind`: which limit stopped it). */
export type TemplateReply = { id: number; text: string } | { id: number; error: string; kind?: 'time' | 'output' };

/** What a rendering gives: the text, or one line saying why not. */
export type RenderResult =
  { text: string } | { error: string; kind: 'template' | 'time' | 'output' | 'heap' | 'crash' };

const CHILD = fileURLToPath(new URL('./template-child.js', import.meta.url));
/** How long the child may take to start (Node and the jinja interpreter: ~0.15 s on an idle machine). */
const START_MS = 30_000;
/** Past a job's time limit (the child's own, vm's timeout), how long before the child is killed. */
const GRACE_MS = 2_000;
const STDERR_KEPT = 4096;

interface Pending {
  id: number;
  seconds: number;
  timedOut: boolean;
  resolve: (r: RenderResult) => void;
}

interface Running {
  child: ChildProcess;
  heapMb: number;
  stderr: string;
  closed: boolean;
  /** Resolves with null once the child is ready, or with why it could not start. */
  ready: Promise<string | null>;
  pending: Pending | null;
}

/** The longest a caller can wait for one rendering (starting the child included). */
export function longestWaitMs(limits: TemplateLimits): number {
  return START_MS + limits.seconds * 1000 + GRACE_MS;
}

function describeEnd(code: number | null, signal: NodeJS.Signals | null): string {
  return signal ? `was killed by ${signal}` : `exited with code ${code}`;
}

export class TemplateProcess {
  private current: Running | null = null;
  private tail: Promise<unknown> = Promise.resolve();
  private nextId = 1;

  /** Renders `template` with `context` once the jobs before it are done. Never rejects. */
  render(template: string, context: Record<string, unknown>, limits: TemplateLimits): Promise<RenderResult> {
    const result = this.tail.then(() =>
      this.renderNow(template, context, limits).catch((e: unknown): RenderResult => ({
        error: `the template renderer failed (${(e as Error)?.message ?? e})`,
        kind: 'crash',
      })),
    );
    this.tail = result;
    return result;
  }

  /** Ends the child now (a rendering in progress reports a crash). */
  close(): void {
    this.current?.child.kill('SIGKILL');
    this.current = null;
  }

  private start(heapMb: number): Running {
    const child = spawn(process.execPath, [`--max-old-space-size=${heapMb}`, CHILD], {
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
      serialization: 'json',
    });
    let readyNow: (why: string | null) => void = () => {};
    const r: Running = {
      child,
      heapMb,
      stderr: '',
      closed: false,
      ready: new Promise((resolve) => (readyNow = resolve)),
      pending: null,
    };
    const startTimer = setTimeout(() => {
      readyNow(`the template renderer did not start within ${START_MS / 1000} s`);
      child.kill('SIGKILL');
    }, START_MS);
    startTimer.unref();
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (d: string) => (r.stderr = (r.stderr + d).slice(-STDERR_KEPT)));
    child.on('message', (m: TemplateReply | { ready: true }) => {
      if ('ready' in m) {
        clearTimeout(startTimer);
        readyNow(null);
        return;
      }
      const p = r.pending;
      if (!p || p.id !== m.id) return;
      r.pending = null;
      p.resolve('text' in m ? { text: m.text } : { error: m.error, kind: m.kind ?? 'template' });
    });
    const ended = (why: string) => {
      clearTimeout(startTimer);
      r.closed = true;
      if (this.current === r) this.current = null;
      readyNow(`the template renderer could not start (${why})`);
      const p = r.pending;
      r.pending = null;
      if (!p) return;
      if (p.timedOut) p.resolve({ error: `rendering did not finish within ${p.seconds} s`, kind: 'time' });
      else if (/heap out of memory|Allocation failed/i.test(r.stderr))
        p.resolve({ error: `rendering needed more than ${heapMb} MiB of memory`, kind: 'heap' });
      else p.resolve({ error: `the template renderer ${why}`, kind: 'crash' });
    };
    child.on('error', (e) => ended(e.message));
    child.on('close', (code, signal) => ended(describeEnd(code, signal)));
    hold(r, false);
    return r;
  }

  private async renderNow(
    template: string,
    context: Record<string, unknown>,
    limits: TemplateLimits,
  ): Promise<RenderResult> {
    if (this.current && this.current.heapMb !== limits.heapMb) this.close();
    const r = (this.current ??= this.start(limits.heapMb));
    hold(r, true);
    try {
      const notStarted = await r.ready;
      if (notStarted !== null) return { error: notStarted, kind: 'crash' };
      return await new Promise<RenderResult>((resolve) => {
        const job: TemplateJob = {
          id: this.nextId++,
          template,
          context,
          seconds: limits.seconds,
          maxChars: limits.maxChars,
        };
        const timer = setTimeout(
          () => {
            if (r.pending) r.pending.timedOut = true;
            r.child.kill('SIGKILL');
          },
          limits.seconds * 1000 + GRACE_MS,
        );
        r.pending = {
          id: job.id,
          seconds: limits.seconds,
          timedOut: false,
          resolve: (res) => {
            clearTimeout(timer);
            resolve(res);
          },
        };
        if (r.closed) {
          r.pending.resolve({ error: 'the template renderer stopped', kind: 'crash' });
          r.pending = null;
          return;
        }
        try {
          r.child.send(job);
        } catch (e) {
          // e.g. a context JSON cannot represent (a BigInt)
          r.pending.resolve({
            error: `cannot pass the context to the template (${(e as Error).message})`,
            kind: 'crash',
          });
          r.pending = null;
        }
      });
    } finally {
      hold(r, false);
    }
  }
}

/** While a job runs, the child keeps this process alive (a caller awaits it); idle, it does not. */
function hold(r: Running, on: boolean): void {
  if (r.closed) return;
  const handles = [r.child, r.child.channel, r.child.stderr as Socket | null];
  for (const h of handles) {
    if (!h) continue;
    if (on) h.ref?.();
    else h.unref?.();
  }
}
