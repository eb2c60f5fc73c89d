// Early stopping (docs/design.md §8): an adapter with `early_stopping` ends when its metric has not improved by
// more than min_delta for `patience` evaluations in a row; the others of a fused run go on. Its state (the best
// value, where it was reached, the evaluations since) is saved in checkpoints, so a resumed run counts on.
import { pathText, type ConfigFile } from '../util/config-file.js';
import { UserError } from '../util/errors.js';
import { Fields } from '../util/fields.js';
import { evalMetricNames, type EvalDuringConfig } from './config-workflow.js';

export interface EarlyStoppingConfig {
  /** An eval metric: eval_loss, eval_accuracy or eval_<task>_accuracy. */
  metric: string;
  /** min: lower is better; max: higher is better. */
  mode: 'min' | 'max';
  /** Evaluations in a row without an improvement that end the adapter. */
  patience: number;
  /** An improvement must beat the best value by more than this. */
  minDelta: number;
}

export interface EarlyStopState {
  /** The best value so far (moves only on an improvement by more than min_delta), and its optimizer step. */
  best: number | null;
  bestStep: number | null;
  /** Evaluations since the last improvement. */
  bad: number;
  /** The patience ran out at the last evaluation. */
  stopped: boolean;
}

export const freshEarlyStop = (): EarlyStopState => ({ best: null, bestStep: null, bad: 0, stopped: false });

/** Lower is better for a loss, higher for an accuracy: the default mode of a metric. */
export const defaultMode = (metric: string): 'min' | 'max' => (metric.endsWith('_loss') ? 'min' : 'max');

/** Whether `value` improves on `best` by more than min_delta. */
export function improves(
  c: Pick<EarlyStoppingConfig, 'mode' | 'minDelta'>,
  value: number,
  best: number | null,
): boolean {
  if (best === null) return true;
  return c.mode === 'min' ? value < best - c.minDelta : value > best + c.minDelta;
}

/** Counts one evaluation's value into the state; returns whether the adapter stops now. */
export function observe(c: EarlyStoppingConfig, s: EarlyStopState, value: number, step: number): boolean {
  if (improves(c, value, s.best)) {
    s.best = value;
    s.bestStep = step;
    s.bad = 0;
  } else {
    s.bad++;
  }
  s.stopped = s.bad >= c.patience;
  return s.stopped;
}

/** An `early_stopping` block (top level: every adapter's default; or one adapter's); `path` is where it is in
 * the config file. Needs an eval block that evaluates every N steps. */
export function parseEarlyStopping(
  cf: ConfigFile,
  value: unknown,
  path: (string | number)[],
  evalCfg: EvalDuringConfig | null,
): EarlyStoppingConfig {
  const f = Fields.of(value, `${cf.file}: ${pathText(path)}`, (key) => cf.locate([...path, key]));
  const refuse = (why: string): never => {
    throw new UserError(`${cf.locate(path)}: field 'early_stopping' ${why}`);
  };
  if (!evalCfg) return refuse('needs an eval block (with every: N): there is nothing to watch');
  const metrics = evalMetricNames(evalCfg);
  const metric = f.str('metric', { default: evalCfg.saveBest ?? metrics[0]! });
  if (!metrics.includes(metric))
    f.fail('metric', `'${metric}' is not a metric of the eval block (${metrics.join(', ')})`);
  const c: EarlyStoppingConfig = {
    metric,
    mode: f.str<'min' | 'max'>('mode', { default: defaultMode(metric), oneOf: ['min', 'max'] as const }),
    patience: f.int('patience', { default: 3, min: 1 }),
    minDelta: f.num('min_delta', { default: 0, min: 0 }),
  };
  f.rejectUnknown();
  if (evalCfg.every === 0)
    refuse('counts evaluations, and eval.every is 0 (only the end is evaluated): set eval.every');
  return c;
}
