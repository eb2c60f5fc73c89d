// evaluate(): commonsense-QA accuracy of adapters (and the base model), computed by `mixlora eval` in a process
// of its own: the same numbers as the command, and the application's event loop stays free meanwhile.
import { spawn } from 'node:child_process';
import path from 'node:path';
import { NODE_FLAGS } from '../util/node-flags.js';
import { packageRoot } from '../util/package.js';
import { UserError } from '../util/errors.js';
import type { TaskResult } from '../eval/scoring.js';

export type { TaskResult } from '../eval/scoring.js';

/** A task to evaluate: a bundled task by name (arc-e, arc-c, boolq, obqa, piqa, siqa, winogrande), or any
 * name with its data file (LLM-Adapters JSON, or `{query, choices, gold}` JSONL). */
export type EvaluationTask =
  | string
  | {
      /** The task's name in the results. */
      name: string;
      /** Its data file. */
      data: string;
    };

/** Options of {@link evaluate}. Only `model` and `tasks` are required. */
export interface EvaluateOptions {
  /** The base model: a folder, a llama2.c checkpoint, or a Hub id. */
  model: string;
  /** The tasks (at least one). */
  tasks: EvaluationTask[];
  /** Adapter folders to evaluate, each named by its folder name in the results. Default: none. */
  adapters?: string[];
  /** Evaluate the base model alone too (named `base`). Default: true without adapters, false with. */
  includeBase?: boolean;
  /** A tokenizer file or folder, when the model's own is not beside it. */
  tokenizer?: string;
  /** The first N items of each task. Default: all. */
  limit?: number;
  /** `choice` (default: candidate labels at the last prompt token, as the paper) or `loglik` (whole choices). */
  scoring?: 'choice' | 'loglik';
  /** Rows per forward pass (default 16). */
  batchSize?: number;
  /** Template of LLM-Adapters records, as in training (default `alpaca`). */
  promptTemplate?: string;
  /** Compute dtype of the frozen weights (default `float32`). */
  dtype?: 'float32' | 'bfloat16' | 'float16';
  /** Keep the base model's decoder projections quantised. Default: not quantised. */
  quantize?: 'int8' | 'nf4';
  /** `cpu` (default), `cuda` or `cuda:N`. */
  device?: string;
  /** CPU threads of the evaluating process. Default: all cores (or MIXLORA_NUM_THREADS). */
  threads?: number;
  /** Stops the evaluation (the promise then rejects with an AbortError). */
  signal?: AbortSignal;
}

/** Expert load of a MixLoRA adapter on a task: per layer, the share of routed slots each expert got. */
export type ExpertLoadByLayer = Record<string, number[]>;

/** What {@link evaluate} returns: `mixlora eval --json`'s document. */
export interface EvaluationReport {
  /** One row per adapter (or `base`) and task: items and accuracy (0-1). */
  results: TaskResult[];
  /** Expert load of each MixLoRA adapter, per task. */
  expert_load_by_adapter: Record<string, Record<string, ExpertLoadByLayer>>;
  /** Mean standard deviation of the expert shares, per MixLoRA adapter and task. */
  expert_load_std: Record<string, Record<string, number>>;
}

/**
 * Accuracy of adapters (and the base model) on commonsense QA tasks, in the same fused batches as
 * `mixlora eval` (it runs that command in a child process).
 *
 * @example
 * ```ts
 * const report = await evaluate({ model: 'stories260K.bin', tokenizer: 'tok512.bin', adapters: ['runs/lora'],
 *   includeBase: true, tasks: ['boolq', 'arc-e'], limit: 100 });
 * for (const r of report.results) console.log(r.adapter, r.task, r.accuracy);
 * ```
 */
export function evaluate(options: EvaluateOptions): Promise<EvaluationReport> {
  const o = options;
  if (!o.tasks?.length) return Promise.reject(new UserError('evaluate: give at least one task'));
  const args = ['eval', '--json', '--model', o.model];
  const adapters = o.adapters ?? [];
  if (o.includeBase ?? adapters.length === 0) args.push('--adapter', 'none');
  for (const a of adapters) args.push('--adapter', a);
  const withData = o.tasks.some((t) => typeof t !== 'string');
  for (const t of o.tasks) {
    args.push('--task', typeof t === 'string' ? t : t.name);
    if (withData) {
      if (typeof t === 'string')
        return Promise.reject(
          new UserError(`evaluate: task ${t}: give every task as { name, data } when one of them has its data`),
        );
      args.push('--data', t.data);
    }
  }
  const opt = (flag: string, v: string | number | undefined) => {
    if (v !== undefined) args.push(flag, String(v));
  };
  opt('--tokenizer', o.tokenizer);
  opt('--limit', o.limit);
  opt('--scoring', o.scoring);
  opt('--batch-size', o.batchSize);
  opt('--prompt-template', o.promptTemplate);
  opt('--dtype', o.dtype);
  opt('--quantize', o.quantize);
  opt('--device', o.device);
  opt('--threads', o.threads);
  return runCli(args, o.signal).then((stdout) => JSON.parse(stdout) as EvaluationReport);
}

/** Runs bin/mixlora with `args`; resolves with its stdout, rejects with its message when it fails. */
function runCli(args: string[], signal?: AbortSignal): Promise<string> {
  const bin = path.join(packageRoot(), 'bin', 'mixlora');
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...NODE_FLAGS, bin, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      ...(signal ? { signal } : {}),
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString('utf8')));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code === 0) return resolve(stdout);
      if (signal?.aborted) return; // rejected by the 'error' event (AbortError)
      const message =
        stderr
          .split('\n')
          .filter((l) => l.startsWith('mixlora: ') || /^error/.test(l))
          .pop()
          ?.replace(/^mixlora: /, '') ?? `mixlora ${args[0]} exited with code ${code}: ${stderr.trim().slice(-2000)}`;
      reject(new UserError(message));
    });
  });
}
