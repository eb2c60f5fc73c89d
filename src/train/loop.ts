// The training loop: every fused step takes the next micro-batch of each running adapter, runs one
// forward and backward pass over all of them, and steps each adapter whose optimizer-step batch is
// complete; adapters that reach their step count are saved and drop out.
import path from 'node:path';
import { zeroGrad } from '../tensor/autograd.js';
import type { CausalLM } from '../models/llama.js';
import { saveAdapter } from '../adapters/io.js';
import { clipGradNorm } from '../optim/index.js';
import { scoredTokens, type Example } from '../data/examples.js';
import { appendFileChecked } from '../io/atomic.js';
import type { TrainConfig } from './config.js';
import { saveCheckpoint } from './checkpoint.js';
import type { RunReports } from './eval-during.js';
import type { MetricsLine } from './metrics.js';
import { checkpointState } from './resume.js';
import { emptyStepTotals, type AdapterRun } from './setup.js';
import { lrMultiplier } from './schedule.js';
import { fusedStep, type MicroBatch, type MicroResult } from './step.js';

export interface LoopContext {
  cfg: TrainConfig;
  model: CausalLM;
  runs: AdapterRun[];
  reports: RunReports;
  metricsFile: string;
  padId: number;
  log: (s: string) => void;
}

/** Runs until every adapter is done, from `fusedSteps` already taken; returns the fused-step count and
 * where each adapter finished in this call was saved. */
export function runLoop(ctx: LoopContext, fusedSteps: number): { fusedSteps: number; outputs: Record<string, string> } {
  const { cfg, runs } = ctx;
  const outputs: Record<string, string> = {};
  while (runs.some((run) => !run.done)) {
    const active = runs.filter((run) => !run.done);
    const microBatches = active.map((run) => nextMicroBatch(run));
    const started = performance.now();
    const results = fusedStep(ctx.model, microBatches, { recompute: cfg.recompute, padId: ctx.padId });
    const seconds = (performance.now() - started) / 1000;
    fusedSteps++;
    let checkpointDue = false;
    const stepped: AdapterRun[] = [];
    active.forEach((run, i) => {
      addToStepTotals(run, results[i]!, seconds);
      if (run.microBatchesDone < microBatchesPerStep(run)) return;
      ctx.reports.trainStep(optimizerStep(run, ctx.metricsFile));
      stepped.push(run);
      if (run.done) outputs[run.cfg.name] = finish(run, cfg, ctx.log);
      if (cfg.saveSteps > 0 && run.step % cfg.saveSteps === 0) checkpointDue = true;
    });
    ctx.reports.afterSteps(stepped.map((run) => ({ ...run, epoch: run.step / run.order.stepsPerEpoch })));
    const finished = runs.every((run) => run.done);
    if (checkpointDue || finished) {
      const where = saveCheckpoint(cfg, checkpointState(cfg, runs, fusedSteps, ctx.metricsFile), runs);
      if (!finished) ctx.log(`checkpoint ${where}`);
    }
  }
  return { fusedSteps, outputs };
}

function addToStepTotals(run: AdapterRun, res: MicroResult, seconds: number): void {
  const totals = run.stepTotals;
  totals.ce += res.ce;
  if (res.aux !== null) {
    totals.aux += res.aux;
    totals.auxCount++;
  }
  totals.scored += res.scoredTokens;
  totals.input += res.inputTokens;
  totals.seconds += seconds;
  run.microBatchesDone++;
}

function stepExamples(run: AdapterRun): Example[] {
  return run.order.batch(run.step).map((i) => run.examples[i]!);
}

function microBatchesPerStep(run: AdapterRun): number {
  return Math.ceil(stepExamples(run).length / run.cfg.microBatchSize);
}

function nextMicroBatch(run: AdapterRun): MicroBatch {
  const batch = stepExamples(run);
  const size = run.cfg.microBatchSize;
  return {
    adapter: run.adapter,
    examples: batch.slice(run.microBatchesDone * size, (run.microBatchesDone + 1) * size),
    stepTokens: batch.reduce((n, e) => n + scoredTokens(e), 0),
    microBatchesPerStep: Math.ceil(batch.length / size),
  };
}

/** The optimizer step once all micro-batches of the step batch have added their gradients. */
function optimizerStep(run: AdapterRun, metricsFile: string): MetricsLine {
  const lr = run.cfg.lr * lrMultiplier(run.cfg.scheduler, run.step, run.totalSteps, run.warmup);
  run.optimizer.lr = lr;
  const params = run.adapter.parameters().map((p) => p.tensor);
  const gradNorm = run.cfg.maxGradNorm !== null ? clipGradNorm(params, run.cfg.maxGradNorm) : null;
  run.optimizer.step();
  zeroGrad(params);
  run.step++;
  const totals = run.stepTotals;
  const line: MetricsLine = {
    adapter: run.cfg.name,
    step: run.step,
    epoch: run.step / run.order.stepsPerEpoch,
    loss: totals.ce,
    aux: totals.auxCount > 0 ? totals.aux / totals.auxCount : null,
    lr,
    tokens: totals.scored,
    tokens_per_s: totals.input / Math.max(totals.seconds, 1e-9),
    grad_norm: gradNorm,
  };
  appendFileChecked(metricsFile, JSON.stringify(line) + '\n');
  run.bar?.update(run.step, {
    loss: line.loss.toFixed(4),
    ...(line.aux !== null ? { aux: line.aux.toFixed(4) } : {}),
    'tok/s': Math.round(line.tokens_per_s),
  });
  run.microBatchesDone = 0;
  run.stepTotals = emptyStepTotals();
  if (run.step >= run.totalSteps) run.done = true;
  return line;
}

function finish(run: AdapterRun, cfg: TrainConfig, log: (s: string) => void): string {
  const out = path.join(cfg.outputDir, run.cfg.name);
  saveAdapter(out, run.adapter, { baseModel: cfg.baseModel, formats: cfg.saveFormats });
  log(`${run.cfg.name}: done after ${run.step} steps, saved to ${out}`);
  return out;
}
