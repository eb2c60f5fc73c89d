// What the studio runs in other processes: training runs (startTraining: the trainer of `mixlora train`
// in a child process, stopped at a resumable checkpoint), evaluations (`mixlora eval`) and exports
// (`mixlora merge`, `mixlora convert --format bin`). Each keeps its recent log lines for the page.
import { spawn } from 'node:child_process';
import path from 'node:path';
import { startTraining, type TrainingRun } from '../api/training.js';
import { NODE_FLAGS } from '../util/node-flags.js';
import { packageRoot } from '../util/package.js';

const LOG_LINES = 400;

export type JobKind = 'train' | 'eval' | 'export';
export type JobStatus = 'running' | 'completed' | 'aborted' | 'failed';

export interface JobInfo {
  id: number;
  kind: JobKind;
  /** The run it belongs to (train), or what it works on. */
  subject: string;
  status: JobStatus;
  error: string | null;
  started: number;
  ended: number | null;
  /** The log's lines so far (the last LOG_LINES), and how many were dropped before them. */
  log: string[];
  dropped: number;
  /** Whatever the job produced (eval: the report; export: the folder written). */
  result: unknown;
}

export class Job {
  readonly info: JobInfo;
  private stopper: (() => void) | null = null;
  readonly done: Promise<void>;

  constructor(
    id: number,
    kind: JobKind,
    subject: string,
    start: (job: Job) => { stop: () => void; finished: Promise<unknown> },
  ) {
    this.info = {
      id,
      kind,
      subject,
      status: 'running',
      error: null,
      started: Date.now(),
      ended: null,
      log: [],
      dropped: 0,
      result: null,
    };
    const { stop, finished } = start(this);
    this.stopper = stop;
    this.done = finished.then(
      (result) => {
        const r = result as { status?: string } | null;
        this.end(r?.status === 'aborted' ? 'aborted' : 'completed', null, result);
      },
      (e: unknown) => this.end('failed', e instanceof Error ? e.message : String(e), null),
    );
  }

  get active(): boolean {
    return this.info.status === 'running';
  }

  log(line: string): void {
    this.info.log.push(line);
    if (this.info.log.length > LOG_LINES) {
      this.info.log.shift();
      this.info.dropped += 1;
    }
  }

  stop(): void {
    if (this.active) this.stopper?.();
  }

  private end(status: JobStatus, error: string | null, result: unknown): void {
    this.info.status = status;
    this.info.error = error;
    this.info.result = result;
    this.info.ended = Date.now();
    if (error) this.log(`error: ${error}`);
    this.log(`${this.info.kind} ${status}`);
  }
}

export class Jobs {
  private readonly jobs: Job[] = [];
  private next = 1;

  list(): Job[] {
    return this.jobs;
  }

  get(id: number): Job | undefined {
    return this.jobs.find((j) => j.info.id === id);
  }

  /** The newest training job of a run. */
  trainingOf(run: string): Job | undefined {
    return this.jobs.findLast((j) => j.info.kind === 'train' && j.info.subject === run);
  }

  private add(kind: JobKind, subject: string, start: ConstructorParameters<typeof Job>[3]): Job {
    const job = new Job(this.next++, kind, subject, start);
    this.jobs.push(job);
    // Finished jobs beyond the last 50 are forgotten.
    while (this.jobs.length > 50) {
      const i = this.jobs.findIndex((j) => !j.active);
      if (i < 0) break;
      this.jobs.splice(i, 1);
    }
    return job;
  }

  /** `mixlora train CONFIG [--resume]` in a child process (the application API's startTraining). */
  train(run: string, configFile: string, resume: boolean): Job {
    return this.add('train', run, (job) => {
      const controller = new AbortController();
      const training: TrainingRun = startTraining(configFile, { resume, signal: controller.signal });
      job.log(`mixlora train ${path.basename(configFile)}${resume ? ' --resume' : ''}`);
      training.on('log', (e) => job.log(e.message));
      training.on('checkpoint', (e) => job.log(`checkpoint ${path.basename(e.path)}`));
      training.on('eval', (e) => job.log(`eval ${e.adapter} step ${e.step}: ${JSON.stringify(e.metrics)}`));
      let last = 0;
      training.on('step', (s) => {
        // One line a second at most: the curves show every step.
        if (Date.now() - last < 1000 && s.step < s.totalSteps) return;
        last = Date.now();
        job.log(`${s.adapter} step ${s.step}/${s.totalSteps} loss ${s.loss.toFixed(4)}`);
      });
      return {
        stop: () => {
          job.log('stop asked: stopping after the optimizer step in progress, with a checkpoint of it');
          controller.abort();
        },
        finished: training.result.then((r) => {
          if (r.status === 'aborted')
            job.log(r.checkpoint ? `stopped; resumable from ${path.basename(r.checkpoint)}` : 'stopped');
          return r;
        }),
      };
    });
  }

  /** bin/mixlora with `args` in a child process; its stdout is the result (parsed as JSON with `json`). */
  cli(kind: JobKind, subject: string, args: string[], opts: { json?: boolean } = {}): Job {
    return this.add(kind, subject, (job) => {
      const controller = new AbortController();
      job.log(`mixlora ${args.join(' ')}`);
      const finished = new Promise<unknown>((resolve, reject) => {
        const child = spawn(process.execPath, [...NODE_FLAGS, path.join(packageRoot(), 'bin', 'mixlora'), ...args], {
          stdio: ['ignore', 'pipe', 'pipe'],
          signal: controller.signal,
        });
        let stdout = '';
        let partial = '';
        let lastLine = '';
        child.stdout.on('data', (d: Buffer) => (stdout += d.toString('utf8')));
        child.stderr.on('data', (d: Buffer) => {
          // Progress bars redraw with \r: only whole lines are kept.
          const lines = (partial + d.toString('utf8')).split(/\r?\n/);
          partial = lines.pop()!;
          for (const l of lines) {
            const text = l.split('\r').pop()!.trim();
            if (text) {
              job.log(text);
              lastLine = text;
            }
          }
        });
        child.on('error', (e) => reject(controller.signal.aborted ? new Error('stopped') : e));
        child.on('close', (code) => {
          if (code === 0) {
            try {
              resolve(opts.json ? JSON.parse(stdout) : stdout);
            } catch (e) {
              reject(e as Error);
            }
          } else if (!controller.signal.aborted)
            reject(new Error(lastLine.replace(/^mixlora: /, '') || `mixlora ${args[0]} exited with code ${code}`));
        });
      });
      return { stop: () => controller.abort(), finished };
    });
  }

  /** Stops every running job (the studio is closing). */
  async stopAll(): Promise<void> {
    const running = this.jobs.filter((j) => j.active);
    for (const j of running) j.stop();
    await Promise.all(running.map((j) => j.done));
  }
}
