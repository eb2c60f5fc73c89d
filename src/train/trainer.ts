// Training several adapters at once over one frozen base model (the m-LoRA side of MixLoRA).
// Read top to bottom: the run's folder (a new run or a resumed one: resume.ts), the model, adapters,
// data and optimizers (setup.ts), a checkpoint's state if resuming, then the loop (loop.ts).
import fs from 'node:fs';
import path from 'node:path';
import { writeFileAtomic } from '../io/atomic.js';
import { writeChart } from '../io/charts.js';
import type { Progress } from '../util/progress.js';
import type { TrainConfig } from './config.js';
import { restoreCheckpoint } from './checkpoint.js';
import { RunReports } from './eval-during.js';
import { lossCurveSpec } from './loss-chart.js';
import { runLoop } from './loop.js';
import { readMetrics, truncateLines } from './metrics.js';
import { openOutputDir } from './output-dir.js';
import { restoreProgress, resumePoint } from './resume.js';
import { setUpRuns } from './setup.js';
import { SOLO, type Group } from '../distributed/group.js';
import type { Device } from '../tensor/tensor.js';
import { checkBatchSplit, rankSeed } from './data-parallel.js';
import { manualSeed } from '../tensor/runtime.js';
import { checkCheckpointRanks, checkSameCheckpoint, followerResumePoint, restoreRankState } from './rank-state.js';

export interface TrainResult {
  outputs: Record<string, string>;
  metricsFile: string;
  charts: string[];
  fusedSteps: number;
  resumedFrom: string | null;
  /** The run was stopped (TrainOptions.stopRequested) at a checkpoint before its end. */
  stopped: boolean;
}

export interface TrainOptions {
  resume?: boolean;
  progress?: Progress;
  /** base_model already resolved to a local path by the caller (e.g. a Hub id it downloaded). */
  modelPath?: string;
  /** The data-parallel job this process is a rank of (default: it trains alone). */
  group?: Group;
  /** This rank's device instead of the config's (cuda:LOCAL_RANK under a launcher). */
  device?: Device;
  /** Asked after every fused step in which an optimizer stepped: true ends the run there, right after a
   * checkpoint of that step (what `--resume` continues from exactly). One process only (not under a launcher). */
  stopRequested?: () => boolean;
}

/** Trains the config's adapters into its output_dir, which is checked (nothing there but a previous
 * run's own files) and locked for the run's life (see output-dir.ts). */
export async function train(cfg: TrainConfig, opts: TrainOptions = {}): Promise<TrainResult> {
  const group = opts.group ?? SOLO;
  checkBatchSplit(cfg, group.worldSize);
  // Rank 0 alone owns output_dir (checks, locks and writes it); the other ranks only read checkpoints.
  const lock = group.rank === 0 ? openOutputDir(cfg, { resume: opts.resume ?? false }) : null;
  try {
    return await trainLocked(cfg, opts, group);
  } finally {
    lock?.release();
  }
}

async function trainLocked(cfg: TrainConfig, opts: TrainOptions, group: Group): Promise<TrainResult> {
  const log = (s: string) => opts.progress?.log(s);
  const lead = group.rank === 0;
  const metricsFile = path.join(cfg.outputDir, 'metrics.jsonl');
  const resume = lead
    ? resumePoint(cfg, opts.resume ?? false, metricsFile, log)
    : followerResumePoint(cfg, opts.resume ?? false);
  if (resume.from && resume.state) checkCheckpointRanks(resume.from, resume.state, group.worldSize);
  const device = opts.device ?? (cfg.device as Device);
  const { model, tokenizer, runs } = await setUpRuns(cfg, opts.modelPath, log, device, group);
  if (group.rank > 0) manualSeed(rankSeed(cfg.seed, group.rank));
  checkSameCheckpoint(group, cfg.outputDir, resume.state);

  let fusedSteps = 0;
  if (resume.state && resume.from) {
    const state = resume.state;
    restoreCheckpoint(resume.from, state, runs);
    if (group.worldSize > 1)
      restoreRankState(
        resume.from,
        group.rank,
        runs.map((run) => run.adapter),
        device,
      );
    for (const run of runs)
      restoreProgress(
        run,
        state.adapters.find((saved) => saved.name === run.cfg.name)!,
      );
    fusedSteps = state.fusedStep;
    if (lead) truncateLines(metricsFile, state.metricsLines);
    log(`resumed from ${resume.from} (fused step ${fusedSteps})`);
  } else {
    // Starting from the beginning (a new run, or one killed before its first checkpoint): metrics of
    // a previous attempt would not match this run's state.
    if (lead && fs.existsSync(metricsFile)) truncateLines(metricsFile, 0);
    if (lead) writeFileAtomic(path.join(cfg.outputDir, 'train_config.json'), JSON.stringify(cfg, null, 2) + '\n');
  }
  const padId = tokenizer?.padId ?? 0;
  // Evaluation during training and its files are rank 0's (the others wait at their next collective); over a
  // sharded base every rank evaluates the same batches, in step (each layer is gathered from all of them).
  const reports = lead || cfg.shardBase ? new RunReports(cfg, model, tokenizer, metricsFile, log, padId, lead) : null;
  const idle = { trainStep: () => {}, afterSteps: () => {} };
  for (const run of runs) {
    run.bar = opts.progress?.bar(run.cfg.name, run.totalSteps) ?? null;
    run.bar?.update(run.step);
  }

  const done = runLoop(
    {
      cfg,
      model,
      runs,
      reports: reports ?? idle,
      metricsFile,
      padId,
      log,
      group,
      device,
      stopRequested: group.worldSize === 1 ? opts.stopRequested : undefined,
    },
    fusedSteps,
  );
  for (const run of runs) {
    run.bar?.stop();
    run.optimizer.dispose();
    run.adapter.dispose();
  }
  model.dispose();
  const charts = lead
    ? await writeChart(
        lossCurveSpec(readMetrics(metricsFile), `training loss (${path.basename(cfg.outputDir)})`),
        path.join(cfg.outputDir, 'loss'),
      )
    : [];
  if (reports) charts.push(...(await reports.finish()));
  const outputs = done.outputs;
  if (!done.stopped) for (const a of cfg.adapters) outputs[a.name] ??= path.join(cfg.outputDir, a.name);
  return {
    outputs,
    metricsFile,
    charts,
    fusedSteps: done.fusedSteps,
    resumedFrom: resume.from,
    stopped: done.stopped,
  };
}
