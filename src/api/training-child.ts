// The process a library training run (startTraining, training.ts) runs in: the trainer's loop is synchronous,
// so it runs here and the application's event loop stays free. It runs train() (train/trainer.ts) as
// `mixlora train` does, reports what the run writes as events over the IPC channel, and stops at a resumable
// point when asked.
//
// What the trainer offers to watch a run from outside is its progress interface (util/progress.ts): a bar per
// adapter updated after every optimizer step, and log lines (one after each checkpoint). Every call reads
// the lines metrics.jsonl gained (step and evaluation lines, in order) and sends them; a checkpoint's log
// line becomes a checkpoint event. The loop cannot receive messages (it never yields), so a stop request is a
// file (its path comes with the start message) that the trainer's stopRequested looks for after each fused
// step with an optimizer step: the run then stops right after a checkpoint of that step, which
// `mixlora train --resume` continues from exactly.
import fs from 'node:fs';
import path from 'node:path';
import { listCheckpoints } from '../train/checkpoint.js';
import { parseTrainConfig, readTrainConfig, type TrainConfig } from '../train/config.js';
import { train } from '../train/trainer.js';
import { resolveModel } from '../models/hub.js';
import { pathText } from '../util/config-file.js';
import type { Progress, ProgressBar } from '../util/progress.js';
import type { ChildMessage, ParentMessage, TrainingEvent, TrainingResult } from './training-protocol.js';

/** Ends the run before the trainer started (a stop asked before the model was loaded). */
class StopTraining extends Error {}

function emit(event: TrainingEvent): void {
  process.send!({ type: 'event', event } satisfies ChildMessage);
}

let stopFile: string | null = null;
let stopAsked = false;
const stopRequested = (): boolean => stopAsked || (stopFile !== null && fs.existsSync(stopFile));

/** Watches one run: metrics.jsonl's new lines, checkpoints, the stop request. */
class RunWatcher {
  private offset = -1;
  private partial = '';
  private readonly totals = new Map<string, number>();

  constructor(private readonly cfg: TrainConfig) {}

  private get metricsFile(): string {
    return path.join(this.cfg.outputDir, 'metrics.jsonl');
  }

  readonly progress: Progress = {
    bar: (label: string, total: number): ProgressBar => {
      // The bars are made once the run's metrics.jsonl holds exactly the lines of the point it starts from
      // (none, or a resumed checkpoint's): new lines are read from here on.
      if (this.offset < 0) this.offset = fs.statSync(this.metricsFile, { throwIfNoEntry: false })?.size ?? 0;
      this.totals.set(label, total);
      return {
        update: (_value: number, fields?: Record<string, string | number>) => {
          // (the first update, without fields, only shows where the adapter starts)
          if (fields === undefined) return;
          this.poll();
        },
        stop: () => {},
      };
    },
    log: (line: string) => {
      this.poll();
      const checkpoint = /^checkpoint (.+)$/.exec(line);
      if (!checkpoint) {
        emit({ type: 'log', message: line });
        return;
      }
      emit({ type: 'checkpoint', path: checkpoint[1]! });
    },
    stop: () => {},
  };

  /** Sends the lines metrics.jsonl gained since the last call. */
  poll(): void {
    if (this.offset < 0 || !fs.existsSync(this.metricsFile)) return;
    const fd = fs.openSync(this.metricsFile, 'r');
    try {
      const size = fs.fstatSync(fd).size;
      if (size < this.offset) this.offset = size;
      if (size === this.offset) return;
      const buf = Buffer.alloc(size - this.offset);
      fs.readSync(fd, buf, 0, buf.length, this.offset);
      this.offset = size;
      const text = this.partial + buf.toString('utf8');
      const lines = text.split('\n');
      this.partial = lines.pop()!;
      for (const line of lines) if (line.trim()) this.lineEvent(JSON.parse(line) as Record<string, unknown>);
    } finally {
      fs.closeSync(fd);
    }
  }

  private lineEvent(m: Record<string, unknown>): void {
    const adapter = String(m.adapter);
    if (m.split === 'eval') {
      const { adapter: _a, step, epoch, split: _s, ...metrics } = m;
      void _a;
      void _s;
      emit({
        type: 'eval',
        adapter,
        step: Number(step),
        epoch: Number(epoch),
        metrics: metrics as Record<string, number | string | boolean>,
      });
      return;
    }
    emit({
      type: 'step',
      adapter,
      step: Number(m.step),
      totalSteps: this.totals.get(adapter) ?? Number(m.step),
      epoch: Number(m.epoch),
      loss: Number(m.loss),
      aux: typeof m.aux === 'number' ? m.aux : null,
      lr: Number(m.lr),
      tokens: Number(m.tokens),
      tokensPerSecond: Number(m.tokens_per_s),
      gradNorm: typeof m.grad_norm === 'number' ? m.grad_norm : null,
    });
  }
}

function readConfig(msg: Extract<ParentMessage, { type: 'start' }>): TrainConfig {
  if (msg.file !== null) return readTrainConfig(msg.file);
  // A config given as an object: its relative paths are relative to `cwd`, as a file's are to its folder.
  const where = path.join(msg.cwd, '<startTraining config>');
  return parseTrainConfig({ file: where, value: msg.value, locate: (p) => `${where}: ${pathText(p.slice(0, -1))}` });
}

async function run(msg: Extract<ParentMessage, { type: 'start' }>): Promise<TrainingResult> {
  stopFile = msg.stopFile;
  // The run ends itself when the application is gone (native/distributed/lifeline.cc watches the parent from a thread:
  // this process's JavaScript is busy in the training loop).
  const { native } = await import('../tensor/native.js');
  native.watchParent(process.ppid, 'mixlora: training process: the application that started it is gone; exiting\n');
  const cfg = readConfig(msg);
  emit({ type: 'start', outputDir: cfg.outputDir, adapters: cfg.adapters.map((a) => a.name) });
  const newest = () => listCheckpoints(cfg).at(-1) ?? null;
  const base = { outputDir: cfg.outputDir, metricsFile: path.join(cfg.outputDir, 'metrics.jsonl') };
  const modelPath = await resolveModel(cfg.baseModel);
  const watcher = new RunWatcher(cfg);
  let result: TrainingResult;
  try {
    if (stopRequested()) throw new StopTraining();
    const r = await train(cfg, { resume: msg.resume, progress: watcher.progress, modelPath, stopRequested });
    watcher.poll();
    if (r.stopped) throw new StopTraining();
    result = {
      ...base,
      status: 'completed',
      adapters: r.outputs,
      charts: r.charts,
      checkpoint: newest(),
      resumedFrom: r.resumedFrom,
    };
  } catch (e) {
    if (!(e instanceof StopTraining)) throw e;
    watcher.poll();
    result = { ...base, status: 'aborted', adapters: {}, charts: [], checkpoint: newest(), resumedFrom: null };
  }
  return result;
}

/** The last message: exit once it is written (the native lifeline thread would not end the process). */
function sendLast(msg: ChildMessage): void {
  process.send!(msg, () => process.exit(0));
}

process.on('message', (msg: ParentMessage) => {
  if (msg.type === 'abort') {
    stopAsked = true;
    return;
  }
  run(msg).then(
    (result) => sendLast({ type: 'event', event: { type: 'done', result } }),
    (e: unknown) => {
      const err = e instanceof Error ? e : new Error(String(e));
      sendLast({ type: 'error', name: err.name, message: err.message, stack: err.stack ?? '' });
    },
  );
});
