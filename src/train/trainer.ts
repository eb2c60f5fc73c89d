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

export interface TrainResult {
  outputs: Record<string, string>;
  metricsFile: string;
  charts: string[];
  fusedSteps: number;
  resumedFrom: string | null;
}

export interface TrainOptions {
  resume?: boolean;
  progress?: Progress;
  /** base_model already resolved to a local path by the caller (e.g. a Hub id it downloaded). */
  modelPath?: string;
}

/** Trains the config's adapters into its output_dir, which is checked (nothing there but a previous
 * run's own files) and locked for the run's life (see output-dir.ts). */
export async function train(cfg: TrainConfig, opts: TrainOptions = {}): Promise<TrainResult> {
  const lock = openOutputDir(cfg, { resume: opts.resume ?? false });
  try {
    return await trainLocked(cfg, opts);
  } finally {
    lock.release();
  }
}

async function trainLocked(cfg: TrainConfig, opts: TrainOptions): Promise<TrainResult> {
  const log = (s: string) => opts.progress?.log(s);
  const metricsFile = path.join(cfg.outputDir, 'metrics.jsonl');
  const resume = resumePoint(cfg, opts.resume ?? false, metricsFile, log);
  const { model, tokenizer, runs } = await setUpRuns(cfg, opts.modelPath, log);

  let fusedSteps = 0;
  if (resume.state && resume.from) {
    const state = resume.state;
    restoreCheckpoint(resume.from, state, runs);
    for (const run of runs)
      restoreProgress(
        run,
        state.adapters.find((saved) => saved.name === run.cfg.name)!,
      );
    fusedSteps = state.fusedStep;
    truncateLines(metricsFile, state.metricsLines);
    log(`resumed from ${resume.from} (fused step ${fusedSteps})`);
  } else {
    // Starting from the beginning (a new run, or one killed before its first checkpoint): metrics of
    // a previous attempt would not match this run's state.
    if (fs.existsSync(metricsFile)) truncateLines(metricsFile, 0);
    writeFileAtomic(path.join(cfg.outputDir, 'train_config.json'), JSON.stringify(cfg, null, 2) + '\n');
  }
  const padId = tokenizer?.padId ?? 0;
  const reports = new RunReports(cfg, model, tokenizer, metricsFile, log, padId);
  for (const run of runs) {
    run.bar = opts.progress?.bar(run.cfg.name, run.totalSteps) ?? null;
    run.bar?.update(run.step);
  }

  const done = runLoop({ cfg, model, runs, reports, metricsFile, padId, log }, fusedSteps);
  for (const run of runs) {
    run.bar?.stop();
    run.optimizer.dispose();
    run.adapter.dispose();
  }
  model.dispose();
  const charts = await writeChart(
    lossCurveSpec(readMetrics(metricsFile), `training loss (${path.basename(cfg.outputDir)})`),
    path.join(cfg.outputDir, 'loss'),
  );
  charts.push(...(await reports.finish()));
  const outputs = done.outputs;
  for (const a of cfg.adapters) outputs[a.name] ??= path.join(cfg.outputDir, a.name);
  return { outputs, metricsFile, charts, fusedSteps: done.fusedSteps, resumedFrom: resume.from };
}
