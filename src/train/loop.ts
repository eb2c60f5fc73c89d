// The training loop: every fused step takes the next micro-batch of each running adapter, runs one
// forward and backward pass over all of them, and steps each adapter whose optimizer-step batch is
// complete; adapters that reach their step count are saved and drop out. In a data-parallel run each
// rank takes its share of every step's micro-batches, the gradients are summed before each optimizer step
// (data-parallel.ts), and rank 0 alone writes metrics, adapters and checkpoints.
import path from 'node:path';
import { zeroGrad } from '../tensor/autograd.js';
import type { CausalLM } from '../models/causal-lm.js';
import { saveAdapter } from '../adapters/io.js';
import { clipGradNorm } from '../optim/index.js';
import { scoredTokens, type Example } from '../data/examples.js';
import { appendFileChecked } from '../io/atomic.js';
import type { TrainConfig } from './config.js';
import { saveCheckpoint } from './checkpoint.js';
import { BEST_DIR } from './output-dir.js';
import type { RunReports } from './eval-during.js';
import type { MetricsLine } from './metrics.js';
import type { Device } from '../tensor/tensor.js';
import type { Group } from '../distributed/group.js';
import { allReduceStep, microBatchOfSlot, slotsPerStep } from './data-parallel.js';
import { gatherRankState } from './rank-state.js';
import { ShardedOptimizer } from './sharded-optimizer.js';
import { checkpointState } from './resume.js';
import { emptyStepTotals, type AdapterRun } from './setup.js';
import { lrMultiplier } from './schedule.js';
import { fusedStep, idlePass, type MicroBatch, type MicroResult } from './step.js';
import { attachStepInBackward } from './step-in-backward.js';

export interface LoopContext {
  cfg: TrainConfig;
  model: CausalLM;
  runs: AdapterRun[];
  reports: Pick<RunReports, 'trainStep' | 'afterSteps'>;
  metricsFile: string;
  padId: number;
  log: (s: string) => void;
  /** The job this process is a rank of (SOLO when alone). */
  group: Group;
  /** This rank's device (cuda:LOCAL_RANK under a launcher). */
  device: Device;
  /** Asked after each fused step in which an optimizer stepped: true stops the loop after a checkpoint. */
  stopRequested?: () => boolean;
}

/** Runs until every adapter is done (or a stop is requested), from `fusedSteps` already taken; returns the
 * fused-step count, where each adapter finished in this call was saved, and whether it stopped early. */
export function runLoop(
  ctx: LoopContext,
  fusedSteps: number,
): { fusedSteps: number; outputs: Record<string, string>; stopped: boolean } {
  const { cfg, runs } = ctx;
  const outputs: Record<string, string> = {};
  while (runs.some((run) => !run.done)) {
    const active = runs.filter((run) => !run.done);
    // null: this rank sits the slot out for that adapter (the short last step of an epoch)
    const microBatches = active.map((run) => nextMicroBatch(run, ctx));
    if (cfg.optimizerInBackward) microBatches.forEach((m, i) => m && stepInBackward(active[i]!, m));
    const present = microBatches.filter((m): m is MicroBatch => m !== null);
    const started = performance.now();
    const results =
      present.length > 0 ? fusedStep(ctx.model, present, { recompute: cfg.recompute, padId: ctx.padId }) : [];
    if (present.length === 0) idlePass(ctx.model);
    const seconds = (performance.now() - started) / 1000;
    fusedSteps++;
    let checkpointDue = false;
    const stepped: AdapterRun[] = [];
    let next = 0;
    active.forEach((run, i) => {
      if (microBatches[i]) addToStepTotals(run, results[next++]!, seconds);
      else run.microBatchesDone++;
      if (run.microBatchesDone < microBatchesPerStep(run, ctx.group)) return;
      ctx.reports.trainStep(optimizerStep(run, ctx));
      stepped.push(run);
      if (run.done) outputs[run.cfg.name] = finish(run, ctx);
      if (cfg.saveSteps > 0 && run.step % cfg.saveSteps === 0) checkpointDue = true;
    });
    ctx.reports.afterSteps(stepped.map((run) => ({ ...run, epoch: run.step / run.order.stepsPerEpoch })));
    for (const run of stoppedEarly(stepped, ctx)) {
      run.done = true;
      outputs[run.cfg.name] = finish(run, ctx);
    }
    const finished = runs.every((run) => run.done);
    // A stop asked for: this step is checkpointed (the point `--resume` continues from exactly), then the loop ends.
    const stop = !finished && stepped.length > 0 && (ctx.stopRequested?.() ?? false);
    if (stop) checkpointDue = true;
    if (checkpointDue || finished) {
      // Every rank hands its partial gradients and generators to rank 0, the writer.
      const { group } = ctx;
      const writeRanks =
        group.worldSize > 1
          ? gatherRankState(
              group,
              runs.map((run) => run.adapter),
              ctx.device,
            )
          : null;
      // A sharded optimizer state comes to rank 0 whole, to be saved as one process saves it.
      for (const run of runs) if (run.optimizer instanceof ShardedOptimizer) run.optimizer.collectState();
      if (group.rank === 0) {
        const state = checkpointState(cfg, runs, fusedSteps, ctx.metricsFile);
        if (group.worldSize > 1) state.worldSize = group.worldSize;
        const where = saveCheckpoint(cfg, state, runs, writeRanks);
        if (!finished) ctx.log(`checkpoint ${where}`);
      }
      for (const run of runs) if (run.optimizer instanceof ShardedOptimizer) run.optimizer.releaseCollected();
    }
    if (stop) {
      ctx.log(`stopped at fused step ${fusedSteps} as asked; --resume continues from its checkpoint`);
      return { fusedSteps, outputs, stopped: true };
    }
  }
  return { fusedSteps, outputs, stopped: false };
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

/** This rank's micro-batch slots per optimizer step (all the step's micro-batches when alone). */
function microBatchesPerStep(run: AdapterRun, group: Group): number {
  return slotsPerStep(Math.ceil(stepExamples(run).length / run.cfg.microBatchSize), group.worldSize);
}

/** The micro-batch of this rank's next slot, or null when it has none (data-parallel.ts). */
function nextMicroBatch(run: AdapterRun, ctx: LoopContext): MicroBatch | null {
  const { group } = ctx;
  const batch = stepExamples(run);
  const size = run.cfg.microBatchSize;
  const stepMicroBatches = Math.ceil(batch.length / size);
  const j = microBatchOfSlot(run.microBatchesDone, stepMicroBatches, group);
  if (j === null) return null;
  return {
    adapter: run.adapter,
    examples: batch.slice(j * size, (j + 1) * size),
    stepTokens: batch.reduce((n, e) => n + scoredTokens(e), 0),
    microBatchesPerStep: stepMicroBatches,
    ...(run.cfg.packing ? { packTo: ctx.cfg.cutoffLen } : {}),
  };
}

function stepLr(run: AdapterRun): number {
  return run.cfg.lr * lrMultiplier(run.cfg.scheduler, run.step, run.totalSteps, run.warmup);
}

/** optimizer_in_backward: the micro-batch is the whole step (config.ts checks), so the step starts now
 * and runs layer by layer in the pass (step-in-backward.ts). */
function stepInBackward(run: AdapterRun, m: MicroBatch): void {
  run.optimizer.lr = stepLr(run);
  attachStepInBackward(run.adapter, run.optimizer, m);
}

/** The optimizer step once all micro-batches of the step batch have added their gradients (on every
 * rank: summed across ranks first); with optimizer_in_backward it was taken during the pass. */
function optimizerStep(run: AdapterRun, ctx: LoopContext): MetricsLine {
  const lr = stepLr(run);
  const params = run.adapter.parameters().map((p) => p.tensor);
  let gradNorm: number | null = null;
  let collectiveSeconds = 0;
  if (!ctx.cfg.optimizerInBackward) {
    run.optimizer.lr = lr;
    const syncStarted = performance.now();
    run.stepTotals = allReduceStep(ctx.group, params, run.stepTotals);
    collectiveSeconds = (performance.now() - syncStarted) / 1000;
    gradNorm = run.cfg.maxGradNorm !== null ? clipGradNorm(params, run.cfg.maxGradNorm) : null;
    run.optimizer.step();
  }
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
    ...(ctx.group.worldSize > 1 ? { collective_s: collectiveSeconds } : {}),
  };
  if (ctx.group.rank === 0) appendFileChecked(ctx.metricsFile, JSON.stringify(line) + '\n');
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

/** The adapters that just stepped and whose early stopping ran out of patience at this evaluation. Rank 0
 * evaluates; with several ranks it tells the others, which take the same decision at the same step. */
function stoppedEarly(stepped: AdapterRun[], ctx: LoopContext): AdapterRun[] {
  const every = ctx.cfg.eval?.every ?? 0;
  // Evaluated now and still running: the same list on every rank.
  const watched = stepped.filter((run) => run.earlyStop && !run.done && every > 0 && run.step % every === 0);
  if (watched.length === 0) return [];
  const flags = watched.map((run) => (run.earlyStop!.stopped ? 1 : 0));
  const lead = ctx.group.worldSize > 1 ? ctx.group.allGatherNumbers(flags)[0]! : flags;
  return watched.filter((run, i) => {
    run.earlyStop!.stopped = lead[i] === 1;
    return run.earlyStop!.stopped;
  });
}

function finish(run: AdapterRun, ctx: LoopContext): string {
  const { cfg } = ctx;
  const out = path.join(cfg.outputDir, run.cfg.name);
  if (ctx.group.rank !== 0) return out;
  saveAdapter(out, run.adapter, { baseModel: cfg.baseModel, formats: cfg.saveFormats });
  const state = run.earlyStop;
  if (state?.stopped) {
    const best = cfg.eval?.saveBest ?? run.cfg.earlyStopping!.metric;
    ctx.log(
      `${run.cfg.name}: stopped early after ${run.step} of ${run.totalSteps} steps (${run.cfg.earlyStopping!.metric} ` +
        `best at step ${state.bestStep}), saved to ${out}; the best adapter by ${best} is in ${path.join(cfg.outputDir, BEST_DIR, run.cfg.name)}`,
    );
  } else {
    ctx.log(`${run.cfg.name}: done after ${run.step} steps, saved to ${out}`);
  }
  return out;
}
