// The training config's fields that fit a run into the user's tools: which weight files to save
// (save_formats), where to report (report_to), and evaluation while training (eval). Parsed here so
// config.ts stays about the training itself.
import fs from 'node:fs';
import path from 'node:path';
import { WEIGHTS_FORMATS, type WeightsFormat } from '../adapters/files.js';
import type { ScoringMethod } from '../eval/scoring.js';
import { bundledData } from '../eval/tasks.js';
import type { ConfigFile } from '../util/config-file.js';
import { Fields } from '../util/fields.js';

export type ReportTarget = 'tensorboard';
export const REPORT_TARGETS: readonly ReportTarget[] = ['tensorboard'];

export interface EvalTaskConfig {
  name: string;
  data: string;
}

export interface EvalDuringConfig {
  /** Held-out files in the training shapes, for `eval_loss` (each adapter's template and cutoff). */
  data: string[];
  /** Commonsense tasks, for `eval_<task>_accuracy` and their mean `eval_accuracy`. */
  tasks: EvalTaskConfig[];
  scoring: ScoringMethod;
  /** Every N optimizer steps of each adapter (0: only at its end). */
  every: number;
  limit: number | null;
  batchSize: number;
  /** The metric whose best value keeps a copy of the adapter in <output_dir>/best/<name>. */
  saveBest: string | null;
}

function resolvePath(cf: ConfigFile, p: string): string {
  return path.isAbsolute(p) ? p : path.resolve(path.dirname(cf.file), p);
}

function stringList(f: Fields, key: string, what: string): string[] {
  const v = f.raw(key);
  if (v === undefined || v === null) return [];
  const list = typeof v === 'string' ? [v] : v;
  if (!Array.isArray(list) || !list.every((x) => typeof x === 'string')) f.fail(key, `must be ${what}`);
  return list as string[];
}

export function parseSaveFormats(f: Fields): WeightsFormat[] {
  const list = f.has('save_formats') ? stringList(f, 'save_formats', 'a list of formats') : ['safetensors'];
  for (const x of list)
    if (!(WEIGHTS_FORMATS as readonly string[]).includes(x))
      f.fail('save_formats', `has '${x}': each must be one of ${WEIGHTS_FORMATS.join(', ')}`);
  if (list.length === 0) f.fail('save_formats', 'must name at least one format');
  return [...new Set(list)] as WeightsFormat[];
}

export function parseReportTo(f: Fields): ReportTarget[] {
  const list = stringList(f, 'report_to', 'a list of report targets');
  for (const x of list)
    if (!(REPORT_TARGETS as readonly string[]).includes(x))
      f.fail('report_to', `has '${x}': each must be one of ${REPORT_TARGETS.join(', ')}`);
  return [...new Set(list)] as ReportTarget[];
}

/** Metric names an eval block produces (save_best must be one of them). */
export function evalMetricNames(e: Pick<EvalDuringConfig, 'data' | 'tasks'>): string[] {
  return [
    ...(e.data.length > 0 ? ['eval_loss'] : []),
    ...(e.tasks.length > 0 ? ['eval_accuracy', ...e.tasks.map((t) => `eval_${t.name}_accuracy`)] : []),
  ];
}

export function parseEvalBlock(cf: ConfigFile, value: unknown): EvalDuringConfig {
  const at = (key: string) => cf.locate(['eval', key]);
  const f: Fields = Fields.of(value, `${cf.file}: eval`, at);
  const data = stringList(f, 'data', 'a file or a list of files').map((p) => resolvePath(cf, p));
  for (const d of data) if (!fs.existsSync(d)) f.fail('data', `names ${d}, which does not exist`);
  const rawTasks = f.raw('tasks');
  const taskList = rawTasks === undefined || rawTasks === null ? [] : Array.isArray(rawTasks) ? rawTasks : [rawTasks];
  const tasks = taskList.map((t, i): EvalTaskConfig => {
    if (typeof t === 'string') {
      const file = bundledData(t);
      if (!file) f.fail('tasks', `[${i}] '${t}' has no bundled data: give {name: ${t}, data: FILE}`);
      return { name: t, data: file };
    }
    const tf: Fields = Fields.of(t, `${cf.file}: eval.tasks[${i}]`, (k) => cf.locate(['eval', 'tasks', i, k]));
    const name = tf.str('name');
    const given = tf.optStr('data');
    tf.rejectUnknown();
    const file = given ? resolvePath(cf, given) : bundledData(name);
    if (!file) tf.fail('data', `is required: '${name}' has no bundled data`);
    if (!fs.existsSync(file)) tf.fail('data', `names ${file}, which does not exist`);
    return { name, data: file };
  });
  const names = tasks.map((t) => t.name);
  const dup = names.find((n, i) => names.indexOf(n) !== i);
  if (dup) f.fail('tasks', `names '${dup}' twice`);
  if (data.length === 0 && tasks.length === 0) f.fail('data', 'or tasks is required: there is nothing to evaluate');
  const cfg: EvalDuringConfig = {
    data,
    tasks,
    scoring: f.str<ScoringMethod>('scoring', { default: 'choice', oneOf: ['choice', 'loglik'] as const }),
    every: f.int('every', { default: 0, min: 0 }),
    limit: f.optInt('limit', { min: 1 }),
    batchSize: f.int('batch_size', { default: 16, min: 1 }),
    saveBest: f.optStr('save_best'),
  };
  f.rejectUnknown();
  const metrics = evalMetricNames(cfg);
  if (cfg.saveBest !== null && !metrics.includes(cfg.saveBest))
    f.fail('save_best', `'${cfg.saveBest}' is not a metric of this eval block (${metrics.join(', ')})`);
  return cfg;
}
