// The runs under --runs: every folder holding a training run's files (metrics.jsonl or train_config.json),
// with its state, its config, its adapters, its checkpoints and its last evaluation.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { LOCK_FILE } from '../io/run-lock.js';
import { BEST_DIR, CHECKPOINTS_DIR, EVAL_DIR } from '../train/output-dir.js';

export type RunState = 'running' | 'finished' | 'failed' | 'resumable' | 'stopped';

export interface AdapterInfo {
  /** The adapter's name in the run. */
  name: string;
  /** Its folder relative to the runs folder (`run/name`, or `run/best/name`). */
  path: string;
  /** LORA or MIXLORA (with use_dora: DoRA, MixDoRA). */
  kind: string;
  best: boolean;
}

export interface RunSummary {
  id: string;
  state: RunState;
  /** The base model and tokenizer the run trained on (absolute paths or a Hub id), from train_config.json. */
  baseModel: string | null;
  tokenizer: string | null;
  /** Adapter names the config trains. */
  names: string[];
  /** Saved adapters. */
  adapters: AdapterInfo[];
  /** Latest optimizer step of each adapter (from metrics.jsonl). */
  steps: Record<string, number>;
  checkpoints: string[];
  hasEval: boolean;
  /** When metrics.jsonl (or the folder) last changed, ms since the epoch. */
  updated: number;
  /** Why it failed (runs this studio started). */
  error: string | null;
}

/** What the studio knows about runs it started (their process is its child). */
export interface JobView {
  active: boolean;
  error: string | null;
  aborted: boolean;
}

export function isRunDir(dir: string): boolean {
  return ['metrics.jsonl', 'train_config.json'].some((f) => fs.existsSync(path.join(dir, f)));
}

/** The run folders directly under `runs`, newest first. */
export function listRunIds(runs: string): string[] {
  let entries: fs.Dirent[];
  try {
    entries = fs.readdirSync(runs, { withFileTypes: true });
  } catch {
    return [];
  }
  return entries
    .filter((e) => e.isDirectory() && !e.name.startsWith('.') && isRunDir(path.join(runs, e.name)))
    .map((e) => e.name);
}

function readJson(file: string): Record<string, unknown> | null {
  try {
    const v = JSON.parse(fs.readFileSync(file, 'utf8')) as unknown;
    return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

/** Whether the run's lock is held by a live process on this machine. */
function lockHeld(dir: string): boolean {
  const lock = readJson(path.join(dir, LOCK_FILE));
  if (!lock || typeof lock.pid !== 'number' || lock.host !== os.hostname()) return false;
  try {
    process.kill(lock.pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function adapterKind(dir: string): string | null {
  const cfg = readJson(path.join(dir, 'adapter_config.json'));
  if (!cfg) return null;
  const dora = cfg.use_dora === true;
  if (cfg.peft_type === 'MIXLORA') return dora ? 'MixDoRA' : 'MixLoRA';
  if (cfg.peft_type === 'LORA') return dora ? 'DoRA' : 'LoRA';
  return String(cfg.peft_type ?? 'adapter');
}

/** The lines of a metrics file (unparseable ones, such as a line being written, skipped). */
export function readMetricsLines(file: string): Record<string, unknown>[] {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return [];
  }
  const out: Record<string, unknown>[] = [];
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    try {
      out.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      // a partial last line
    }
  }
  return out;
}

export function completeCheckpoints(dir: string): string[] {
  try {
    return fs
      .readdirSync(path.join(dir, CHECKPOINTS_DIR))
      .filter((n) => /^checkpoint-\d+$/.test(n) && fs.existsSync(path.join(dir, CHECKPOINTS_DIR, n, 'state.json')))
      .sort((a, b) => Number(a.split('-')[1]) - Number(b.split('-')[1]));
  } catch {
    return [];
  }
}

export function summarize(runs: string, id: string, job: JobView | null): RunSummary {
  const dir = path.join(runs, id);
  const cfg = readJson(path.join(dir, 'train_config.json'));
  const cfgAdapters = Array.isArray(cfg?.adapters) ? (cfg.adapters as { name?: unknown }[]) : [];
  const metrics = readMetricsLines(path.join(dir, 'metrics.jsonl'));
  const steps: Record<string, number> = {};
  for (const m of metrics)
    if (m.split !== 'eval' && typeof m.adapter === 'string' && typeof m.step === 'number') steps[m.adapter] = m.step;
  const names = cfgAdapters.map((a) => String(a.name)).filter((n) => n !== 'undefined');
  if (names.length === 0) names.push(...Object.keys(steps));
  const adapters: AdapterInfo[] = [];
  for (const [best, base] of [
    [false, dir],
    [true, path.join(dir, BEST_DIR)],
  ] as const) {
    for (const name of names) {
      const kind = adapterKind(path.join(base, name));
      if (kind) adapters.push({ name, kind, best, path: [id, ...(best ? [BEST_DIR] : []), name].join('/') });
    }
  }
  const checkpoints = completeCheckpoints(dir);
  const finished = names.length > 0 && names.every((n) => adapters.some((a) => a.name === n && !a.best));
  let state: RunState;
  if (job?.active || lockHeld(dir)) state = 'running';
  else if (finished) state = 'finished';
  else if (checkpoints.length > 0) state = 'resumable';
  else if (job && job.aborted) state = 'stopped';
  else state = 'failed';
  let updated = 0;
  for (const f of ['metrics.jsonl', 'train_config.json', '.'])
    updated = Math.max(updated, fs.statSync(path.join(dir, f), { throwIfNoEntry: false })?.mtimeMs ?? 0);
  return {
    id,
    state,
    baseModel: typeof cfg?.baseModel === 'string' ? cfg.baseModel : null,
    tokenizer: typeof cfg?.tokenizer === 'string' ? cfg.tokenizer : null,
    names,
    adapters,
    steps,
    checkpoints,
    hasEval: fs.existsSync(path.join(dir, EVAL_DIR, 'results.json')),
    updated,
    error: job?.error ?? null,
  };
}
