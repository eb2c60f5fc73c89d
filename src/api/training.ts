// startTraining: the trainer (train/trainer.ts, what `mixlora train` runs) in a child process of its own
// (training-child.ts), so that the application's event loop stays free for the whole run; its progress comes
// back as events, its end as a promise, and an AbortSignal stops it at a point `--resume` continues from.
import { fork, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { NODE_FLAGS } from '../util/node-flags.js';
import { UserError } from '../util/errors.js';
import type {
  ChildMessage,
  ParentMessage,
  TrainingCheckpointEvent,
  TrainingEvalEvent,
  TrainingEvent,
  TrainingLogEvent,
  TrainingResult,
  TrainingStartEvent,
  TrainingStepEvent,
} from './training-protocol.js';

export type {
  TrainingCheckpointEvent,
  TrainingDoneEvent,
  TrainingEvalEvent,
  TrainingEvent,
  TrainingLogEvent,
  TrainingResult,
  TrainingStartEvent,
  TrainingStepEvent,
} from './training-protocol.js';

/**
 * A training config as an object: the keys of a YAML/JSON training config (docs/training-config.md), e.g.
 * `{ base_model, tokenizer, output_dir, save_steps, adapters: [{ name, adapter: {...}, data, ... }] }`.
 * Relative paths in it are relative to {@link TrainingOptions.cwd}.
 */
export type TrainingConfigObject = Record<string, unknown>;

/** Options of {@link startTraining}. Every field is optional. */
export interface TrainingOptions {
  /** Stops the run after the optimizer step in progress, at a resumable checkpoint (see {@link TrainingResult}). */
  signal?: AbortSignal;
  /** Continue from the newest complete checkpoint in output_dir (as `mixlora train --resume`). Default false. */
  resume?: boolean;
  /** CPU threads of the training process's libtorch. Default: all cores (or MIXLORA_NUM_THREADS). */
  threads?: number;
  /** The folder relative paths of a config object are relative to. Default: process.cwd(). */
  cwd?: string;
}

/** The events of a {@link TrainingRun}, as EventEmitter listeners receive them. */
export interface TrainingRunEvents {
  /** The config was read; the model and data are loading. */
  start: [TrainingStartEvent];
  /** An optimizer step of one adapter. */
  step: [TrainingStepEvent];
  /** An evaluation during training. */
  eval: [TrainingEvalEvent];
  /** A complete checkpoint was written. */
  checkpoint: [TrainingCheckpointEvent];
  /** A line the trainer (or the training process) says. */
  log: [TrainingLogEvent];
  /** The run ended (completed or aborted); the same result as {@link TrainingRun.result}. */
  done: [TrainingResult];
  /** The run failed (emitted only when a listener is attached; {@link TrainingRun.result} rejects in any case). */
  error: [Error];
}

const childEntry = fileURLToPath(new URL('./training-child.js', import.meta.url));

/**
 * A training run started by {@link startTraining}: an EventEmitter of its events (`step`, `eval`, `checkpoint`,
 * `log`, `start`, `done`, `error`) and an async iterable of all of them in order (each iteration starts from
 * the run's first event and ends after `done`).
 */
export class TrainingRun extends EventEmitter<TrainingRunEvents> implements AsyncIterable<TrainingEvent> {
  /** How the run ended: resolves when it completed or was aborted; rejects when it failed. */
  readonly result: Promise<TrainingResult>;
  private readonly events: TrainingEvent[] = [];
  private failure: Error | null = null;
  private ended = false;
  private wake: (() => void)[] = [];
  private readonly child: ChildProcess;
  private readonly stopFile: string;
  private readonly tmp: string;

  /** @internal (use {@link startTraining}) */
  constructor(config: string | TrainingConfigObject, options: TrainingOptions) {
    super();
    this.tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mixlora-run-'));
    this.stopFile = path.join(this.tmp, 'stop');
    const env = { ...process.env };
    if (options.threads !== undefined) env.MIXLORA_NUM_THREADS = String(options.threads);
    this.child = fork(childEntry, [], {
      execArgv: [...NODE_FLAGS],
      env,
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
      serialization: 'json',
    });
    let settle!: { resolve: (r: TrainingResult) => void; reject: (e: Error) => void };
    this.result = new Promise<TrainingResult>((resolve, reject) => (settle = { resolve, reject }));
    // Handled here too: an application that only listens to events does not get an unhandled rejection.
    this.result.catch(() => {});
    const stderr: string[] = [];
    let partial = '';
    const onOutput = (chunk: Buffer) => {
      const lines = (partial + chunk.toString('utf8')).split('\n');
      partial = lines.pop()!;
      for (const line of lines) {
        if (!line.trim()) continue;
        stderr.push(line);
        if (stderr.length > 20) stderr.shift();
        this.record({ type: 'log', message: line });
      }
    };
    this.child.stdout!.on('data', onOutput);
    this.child.stderr!.on('data', onOutput);
    let outcome: TrainingResult | Error | null = null;
    this.child.on('message', (msg: ChildMessage) => {
      if (msg.type === 'error') {
        const e = msg.name === 'UserError' ? new UserError(msg.message) : new Error(msg.message);
        if (msg.name !== 'UserError') e.stack = msg.stack;
        outcome = e;
      } else if (msg.event.type === 'done') {
        outcome = msg.event.result;
      } else this.record(msg.event);
    });
    this.child.on('error', (e) => (outcome ??= e));
    this.child.on('close', (code, signal) => {
      fs.rmSync(this.tmp, { recursive: true, force: true });
      options.signal?.removeEventListener('abort', onAbort);
      if (outcome === null)
        outcome = new Error(
          `the training process ${signal ? `was killed by ${signal}` : `exited with code ${code}`} before the run ended` +
            (stderr.length ? `:\n${stderr.join('\n')}` : ''),
        );
      if (outcome instanceof Error) {
        this.failure = outcome;
        this.ended = true;
        this.notify();
        if (this.listenerCount('error') > 0) this.emit('error', outcome);
        settle.reject(outcome);
      } else {
        this.record({ type: 'done', result: outcome });
        settle.resolve(outcome);
      }
    });
    const onAbort = () => this.abort();
    options.signal?.addEventListener('abort', onAbort, { once: true });
    const start: ParentMessage = {
      type: 'start',
      file: typeof config === 'string' ? path.resolve(config) : null,
      value: typeof config === 'string' ? null : config,
      cwd: path.resolve(options.cwd ?? process.cwd()),
      resume: options.resume ?? false,
      stopFile: this.stopFile,
    };
    this.child.send(start);
    if (options.signal?.aborted) this.abort();
  }

  /**
   * Asks the run to stop (as its AbortSignal does): it stops after the optimizer step in progress, right after a
   * checkpoint of that step; `result` then resolves with status `aborted` and the checkpoint to resume from.
   */
  abort(): void {
    if (this.ended || !fs.existsSync(this.tmp)) return;
    fs.writeFileSync(this.stopFile, '');
    if (this.child.connected) this.child.send({ type: 'abort' } satisfies ParentMessage);
  }

  /** The events so far, then each as it comes, until `done` (throws the run's error if it failed). */
  async *[Symbol.asyncIterator](): AsyncIterator<TrainingEvent> {
    let i = 0;
    for (;;) {
      while (i < this.events.length) {
        const e = this.events[i++]!;
        yield e;
        if (e.type === 'done') return;
      }
      if (this.failure) throw this.failure;
      if (this.ended) return;
      await new Promise<void>((resolve) => this.wake.push(resolve));
    }
  }

  private record(event: TrainingEvent): void {
    this.events.push(event);
    if (event.type === 'done') this.ended = true;
    this.notify();
    switch (event.type) {
      case 'start':
        this.emit('start', event);
        break;
      case 'step':
        this.emit('step', event);
        break;
      case 'eval':
        this.emit('eval', event);
        break;
      case 'checkpoint':
        this.emit('checkpoint', event);
        break;
      case 'log':
        this.emit('log', event);
        break;
      case 'done':
        this.emit('done', event.result);
        break;
    }
  }

  private notify(): void {
    for (const w of this.wake.splice(0)) w();
  }
}

/**
 * Starts training adapters as a config describes (a YAML/JSON file, or the same keys as an object) in a
 * process of its own, as `mixlora train` would: the calling process's event loop stays free for the whole run.
 *
 * @example
 * ```ts
 * const controller = new AbortController();
 * const run = startTraining('train.yaml', { signal: controller.signal });
 * run.on('step', (s) => console.log(`${s.adapter} ${s.step}/${s.totalSteps} loss ${s.loss.toFixed(3)}`));
 * const result = await run.result; // { status: 'completed', adapters: { lora: '.../lora' }, ... }
 * ```
 */
export function startTraining(config: string | TrainingConfigObject, options: TrainingOptions = {}): TrainingRun {
  return new TrainingRun(config, options);
}
