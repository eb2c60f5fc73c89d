// Whether a run starts fresh or continues from its last complete checkpoint, and what a checkpoint
// records of the adapters' progress (the counters of state.json; tensors are in checkpoint.ts).
import fs from 'node:fs';
import path from 'node:path';
import { UserError } from '../util/errors.js';
import type { TrainConfig } from './config.js';
import {
  checkpointsDir,
  configDigest,
  legacyConfigDigest,
  listCheckpoints,
  readCheckpointState,
  type AdapterCheckpoint,
  type CheckpointState,
} from './checkpoint.js';
import { countLines } from './metrics.js';
import { freshEarlyStop } from './early-stopping.js';
import type { AdapterRun } from './setup.js';

export interface ResumePoint {
  /** The checkpoint to continue from, or null: start from the beginning. */
  from: string | null;
  state: CheckpointState | null;
}

/**
 * Refuses to start over a previous run without --resume, and to resume from a checkpoint written under
 * another config; with --resume, removes checkpoints a killed run left unfinished.
 */
export function resumePoint(
  cfg: TrainConfig,
  resume: boolean,
  metricsFile: string,
  log: (s: string) => void,
): ResumePoint {
  const checkpoints = listCheckpoints(cfg);
  if (!resume && (checkpoints.length > 0 || fs.existsSync(metricsFile))) {
    throw new UserError(
      `${cfg.outputDir} already holds a training run: continue it with --resume, or choose another output_dir`,
    );
  }
  const from = resume && checkpoints.length > 0 ? checkpoints[checkpoints.length - 1]! : null;
  const state = from ? readCheckpointState(from) : null;
  if (state && state.configDigest !== configDigest(cfg) && state.configDigest !== legacyConfigDigest(cfg)) {
    throw new UserError(
      `${from}: the config changed since this checkpoint was written; resume with the same config (only recompute, optimizer_in_backward, shard_base and shard_optimizer may change), or start a new output_dir`,
    );
  }
  if (resume && !from) log('no complete checkpoint found: starting from the beginning');
  if (resume) removeUnfinishedCheckpoints(cfg);
  return { from, state };
}

/** Checkpoints a killed run was still writing (temporary names; never looked complete). */
function removeUnfinishedCheckpoints(cfg: TrainConfig): void {
  const dir = checkpointsDir(cfg);
  if (!fs.existsSync(dir)) return;
  for (const n of fs.readdirSync(dir))
    if (/^\.checkpoint-\d+\.tmp-/.test(n)) fs.rmSync(path.join(dir, n), { recursive: true, force: true });
}

/** What state.json records of the run (file field names: `micro`, `acc`). */
export function checkpointState(
  cfg: TrainConfig,
  runs: AdapterRun[],
  fusedSteps: number,
  metricsFile: string,
): CheckpointState {
  const devices = ['cpu', ...(cfg.device.startsWith('cuda') ? [cfg.device] : [])];
  return {
    format: 1,
    fusedStep: fusedSteps,
    configDigest: configDigest(cfg),
    metricsLines: countLines(metricsFile),
    rngDevices: devices,
    adapters: runs.map((run) => {
      const { tensors: _t, ...optimizer } = run.optimizer.stateDict();
      void _t;
      return {
        name: run.cfg.name,
        step: run.step,
        micro: run.microBatchesDone,
        done: run.done,
        acc: { ...run.stepTotals },
        optimizer,
        ...(run.earlyStop ? { earlyStop: { ...run.earlyStop } } : {}),
      };
    }),
  };
}

/** Puts a checkpoint's counters back into the run of the same adapter. */
export function restoreProgress(run: AdapterRun, saved: AdapterCheckpoint): void {
  run.step = saved.step;
  run.microBatchesDone = saved.micro;
  run.done = saved.done;
  run.stepTotals = { ...saved.acc };
  if (run.earlyStop) run.earlyStop = saved.earlyStop ? { ...saved.earlyStop } : freshEarlyStop();
}
