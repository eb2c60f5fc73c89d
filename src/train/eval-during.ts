// What a training run reports besides metrics.jsonl's training lines: evaluation every N optimizer steps
// and at the end (held-out loss and/or commonsense accuracy, in the fused batches of `mixlora eval`),
// the best adapter kept in <output_dir>/best/<name>, an eval chart, and TensorBoard event files in
// <output_dir>/tensorboard/<name>/. The trainer calls it at three points: after each optimizer step's
// metrics line, after each fused step, and at the end.
import fs from 'node:fs';
import path from 'node:path';
import type { Adapter } from '../adapters/adapter.js';
import { saveAdapter } from '../adapters/io.js';
import { loadExamples, type Example } from '../data/examples.js';
import { heldOutLoss } from '../eval/heldout-loss.js';
import { evaluateTask } from '../eval/scoring.js';
import { loadTask, type EvalTask } from '../eval/tasks.js';
import type { CausalLM } from '../models/causal-lm.js';
import { writeChart, type ChartSpec } from '../io/charts.js';
import { EventWriter } from '../io/tensorboard.js';
import { BEST_DIR, TENSORBOARD_DIR } from './output-dir.js';
import type { TextTokenizer } from '../tokenizer/tokenizer.js';
import { UserError } from '../util/errors.js';
import type { AdapterTrainConfig, TrainConfig } from './config.js';
import type { EvalDuringConfig } from './config-workflow.js';
import { defaultMode, improves, observe, type EarlyStopState } from './early-stopping.js';

/** The metric whose best value keeps best/<name>, and which way is better: the eval block's save_best, or else
 * the adapter's early-stopping metric (best/ then holds what early stopping judged best). */
function bestOf(e: EvalDuringConfig | null, a: AdapterTrainConfig): { metric: string; mode: 'min' | 'max' } | null {
  const es = a.earlyStopping;
  const metric = e?.saveBest ?? es?.metric ?? null;
  if (metric === null) return null;
  return { metric, mode: es && es.metric === metric ? es.mode : defaultMode(metric) };
}

/** The folders a run writes in output_dir besides the adapters, checkpoints/ and metrics.jsonl. */

export interface TrainLine {
  adapter: string;
  step: number;
  loss: number;
  aux: number | null;
  lr: number;
  tokens_per_s: number;
  grad_norm: number | null;
}

export interface SteppedAdapter {
  cfg: AdapterTrainConfig;
  adapter: Adapter;
  step: number;
  epoch: number;
  done: boolean;
  /** With early_stopping: its state, updated here by each evaluation (the caller ends the adapter once
   * `stopped`). */
  earlyStop: EarlyStopState | null;
}

export interface EvalLine {
  adapter: string;
  step: number;
  epoch: number;
  split: 'eval';
  [metric: string]: number | string | boolean;
}

export class RunReports {
  private readonly tb = new Map<string, EventWriter>();
  private readonly heldOut = new Map<string, Example[]>();
  /** Tasks per prompt template (LLM-Adapters records are rendered with the adapter's template). */
  private readonly tasks = new Map<string, EvalTask[]>();
  private readonly best = new Map<string, number>();

  constructor(
    private readonly cfg: TrainConfig,
    private readonly model: CausalLM,
    private readonly tokenizer: TextTokenizer | null,
    private readonly metricsFile: string,
    private readonly log: (s: string) => void,
    private readonly padId: number,
    /** False on the other ranks of a sharded base (shard_base): they evaluate alongside rank 0, since each
     * layer's weights are gathered from every rank, and write nothing. */
    private readonly writes = true,
  ) {
    if (writes && cfg.reportTo.includes('tensorboard'))
      for (const a of cfg.adapters)
        this.tb.set(a.name, new EventWriter(path.join(cfg.outputDir, TENSORBOARD_DIR, a.name)));
    const e = cfg.eval;
    if (!e) return;
    if (!tokenizer && (e.tasks.length > 0 || e.data.length > 0))
      throw new UserError(`${cfg.file}: eval needs a tokenizer (give tokenizer: or a model folder with one)`);
    for (const a of cfg.adapters) {
      const examples: Example[] = [];
      for (const file of e.data) {
        const part = loadExamples(file, tokenizer, {
          template: a.promptTemplate,
          trainOnInputs: a.trainOnInputs,
          cutoffLen: cfg.cutoffLen,
          vocabSize: model.config.vocabSize,
        });
        examples.push(...part.examples);
      }
      this.heldOut.set(a.name, e.limit === null ? examples : examples.slice(0, e.limit));
      if (!this.tasks.has(a.promptTemplate))
        this.tasks.set(
          a.promptTemplate,
          e.tasks.map((t) => loadTask(t.name, t.data, { template: a.promptTemplate, limit: e.limit })),
        );
    }
    // A resumed run: the best value so far is in the eval lines kept in metrics.jsonl.
    if (writes && fs.existsSync(metricsFile)) {
      for (const l of fs.readFileSync(metricsFile, 'utf8').split('\n')) {
        if (!l.trim()) continue;
        const m = JSON.parse(l) as Record<string, unknown>;
        const a = cfg.adapters.find((x) => x.name === m.adapter);
        const best = a ? bestOf(e, a) : null;
        const v = best ? m[best.metric] : undefined;
        if (m.split === 'eval' && m.best === true && typeof v === 'number') this.best.set(String(m.adapter), v);
      }
    }
  }

  /** TensorBoard scalars of an optimizer step's metrics line. */
  trainStep(line: TrainLine): void {
    this.tb.get(line.adapter)?.scalars(line.step, {
      'train/loss': line.loss,
      'train/aux_loss': line.aux,
      'train/learning_rate': line.lr,
      'train/grad_norm': line.grad_norm,
      'train/tokens_per_s': line.tokens_per_s,
    });
  }

  /** Evaluates the adapters that just stepped and are due (every N steps, or done), together. */
  afterSteps(stepped: SteppedAdapter[]): void {
    const e = this.cfg.eval;
    if (!e) return;
    const due = stepped.filter((run) => run.done || (e.every > 0 && run.step % e.every === 0));
    if (due.length === 0) return;
    const lines = new Map<SteppedAdapter, EvalLine>(
      due.map((run) => [run, { adapter: run.cfg.name, step: run.step, epoch: run.epoch, split: 'eval' }]),
    );
    if (e.data.length > 0) {
      const losses = heldOutLoss(
        this.model,
        due.map((run) => ({ adapter: run.adapter, examples: this.heldOut.get(run.cfg.name)! })),
        { batchSize: e.batchSize, padId: this.padId },
      );
      due.forEach((run, i) => {
        if (losses[i] !== null) lines.get(run)!.eval_loss = losses[i]!;
      });
    }
    if (e.tasks.length > 0) {
      for (const [template, tasks] of this.tasks) {
        const group = due.filter((run) => run.cfg.promptTemplate === template);
        if (group.length === 0) continue;
        const sums = group.map(() => 0);
        for (const task of tasks) {
          const { results } = evaluateTask(
            this.model,
            this.tokenizer!, // checked in the constructor
            group.map((run) => ({ name: run.cfg.name, adapter: run.adapter })),
            task,
            { method: e.scoring, batchSize: e.batchSize },
          );
          results.forEach((res, i) => {
            lines.get(group[i]!)![`eval_${task.name}_accuracy`] = res.accuracy;
            sums[i]! += res.accuracy;
          });
        }
        group.forEach((run, i) => (lines.get(run)!.eval_accuracy = sums[i]! / tasks.length));
      }
    }
    if (this.writes) for (const [run, line] of lines) this.record(run, line);
  }

  private record(run: SteppedAdapter, line: EvalLine): void {
    const best = bestOf(this.cfg.eval, run.cfg);
    const metric = best?.metric;
    const value = best ? line[best.metric] : undefined;
    if (
      best &&
      typeof value === 'number' &&
      improves({ mode: best.mode, minDelta: 0 }, value, this.best.get(run.cfg.name) ?? null)
    ) {
      this.best.set(run.cfg.name, value);
      saveAdapter(path.join(this.cfg.outputDir, BEST_DIR, run.cfg.name), run.adapter, {
        baseModel: this.cfg.baseModel,
        formats: this.cfg.saveFormats,
      });
      line.best = true;
    }
    const es = run.cfg.earlyStopping;
    const watched = es ? line[es.metric] : undefined;
    let stopNote = '';
    if (es && run.earlyStop && typeof watched === 'number') {
      const state = run.earlyStop;
      observe(es, state, watched, run.step);
      // (the adapter's last evaluation counts, but it ends anyway)
      if (run.done) state.stopped = false;
      line.evals_without_improvement = state.bad;
      if (state.stopped) {
        line.early_stop = true;
        stopNote =
          `; early stopping: ${es.metric} has not improved by more than ${es.minDelta} for ${es.patience} evaluation(s) ` +
          `(best ${state.best!.toFixed(4)} at step ${state.bestStep})`;
      }
    }
    fs.appendFileSync(this.metricsFile, JSON.stringify(line) + '\n');
    const shown = Object.entries(line)
      .filter(([k, v]) => k.startsWith('eval_') && typeof v === 'number')
      .map(([k, v]) => `${k} ${(v as number).toFixed(4)}`);
    this.log(
      `${run.cfg.name} step ${run.step}: ${shown.join(', ')}${line.best ? ` (best ${metric} so far: saved)` : ''}${stopNote}`,
    );
    const scalars: Record<string, number> = {};
    for (const [k, v] of Object.entries(line))
      if (k.startsWith('eval_') && typeof v === 'number') scalars[`eval/${k.slice('eval_'.length)}`] = v;
    this.tb.get(run.cfg.name)?.scalars(run.step, scalars);
  }

  /** The eval chart (<output_dir>/eval.svg and .png) when there were evaluations; the paths written. */
  async finish(): Promise<string[]> {
    if (!this.writes || !this.cfg.eval || !fs.existsSync(this.metricsFile)) return [];
    const points: { adapter: string; step: number; metric: string; value: number }[] = [];
    for (const l of fs.readFileSync(this.metricsFile, 'utf8').split('\n')) {
      if (!l.trim()) continue;
      const m = JSON.parse(l) as Record<string, unknown>;
      if (m.split !== 'eval') continue;
      for (const [k, v] of Object.entries(m))
        if (k.startsWith('eval_') && typeof v === 'number')
          points.push({ adapter: String(m.adapter), step: Number(m.step), metric: k, value: v });
    }
    if (points.length === 0) return [];
    return writeChart(
      evalCurveSpec(points, `evaluation (${path.basename(this.cfg.outputDir)})`),
      path.join(this.cfg.outputDir, 'eval'),
    );
  }
}

function evalCurveSpec(
  points: { adapter: string; step: number; metric: string; value: number }[],
  title: string,
): ChartSpec {
  const metrics = [...new Set(points.map((p) => p.metric))];
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title,
    vconcat: metrics.map((metric) => {
      const data = points.filter((p) => p.metric === metric);
      return {
        width: 520,
        height: 180,
        data: { values: data },
        mark: { type: 'line', point: true },
        encoding: {
          x: { field: 'step', type: 'quantitative', title: 'optimizer step', axis: { tickMinStep: 1, format: 'd' } },
          y: { field: 'value', type: 'quantitative', title: metric, scale: { zero: false } },
          color: { field: 'adapter', type: 'nominal' },
        },
      };
    }),
  } as ChartSpec;
}
