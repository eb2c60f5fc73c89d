// Training checkpoints: <output_dir>/checkpoints/checkpoint-<fused step>/, written under a temporary
// name and renamed when complete (a crash never leaves one that looks complete). Each holds, per
// adapter, its parameters, accumulated gradients and optimizer state; the generator states; and
// state.json with every counter needed to continue exactly where the run was.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { noGrad } from '../tensor/autograd.js';
import { getRngState, setRngState } from '../tensor/runtime.js';
import { tidy } from '../tensor/scope.js';
import type { Device, Tensor } from '../tensor/tensor.js';
import { loadAll, saveSafetensors } from '../io/safetensors.js';
import { writeDirAtomic, writeFileAtomic } from '../io/atomic.js';
import type { Adapter } from '../adapters/adapter.js';
import type { Optimizer, OptimizerState } from '../optim/optimizer.js';
import { UserError } from '../util/errors.js';
import type { TrainConfig } from './config.js';
import type { EarlyStopState } from './early-stopping.js';

export interface StepTotals {
  ce: number;
  aux: number;
  auxCount: number;
  scored: number;
  input: number;
  seconds: number;
}

export interface AdapterCheckpoint {
  name: string;
  step: number;
  micro: number;
  done: boolean;
  acc: StepTotals;
  optimizer: Omit<OptimizerState, 'tensors'>;
  /** With early_stopping: its state (absent otherwise). */
  earlyStop?: EarlyStopState;
}

export interface CheckpointState {
  format: 1;
  fusedStep: number;
  configDigest: string;
  metricsLines: number;
  rngDevices: string[];
  adapters: AdapterCheckpoint[];
  /** Ranks of the data-parallel run that wrote it (absent: 1). With more than one, each rank's partial
   * gradients and generator states are in rank-<r>.safetensors (rank-state.ts), not beside the rest. */
  worldSize?: number;
}

/** The SHA-256 (hex) of a value's JSON. */
function sha256Json(value: unknown): string {
  return crypto.createHash('sha256').update(JSON.stringify(value)).digest('hex');
}

/**
 * What a checkpoint's config must match to be resumed from: the whole config but its file's path and the
 * settings that trade memory for time without changing what a step computes (recompute: the same weights
 * to float32 rounding, dropout included; optimizer_in_backward: bit for bit; shard_base: the same numbers
 * gathered; shard_optimizer: bit for bit, its state saved unsharded). So a run that ran out of memory can be
 * resumed with them turned on.
 */
export function configDigest(c: TrainConfig): string {
  const {
    file: _file,
    recompute: _recompute,
    optimizerInBackward: _inBackward,
    shardBase: _shard,
    shardOptimizer: _shardOptimizer,
    ...rest
  } = c;
  void [_file, _recompute, _inBackward, _shard, _shardOptimizer];
  return sha256Json(rest);
}

/** The digest checkpoints written before configDigest left the memory settings out carry (all but the file). */
export function legacyConfigDigest(c: TrainConfig): string {
  const { file: _file, ...rest } = c;
  void _file;
  return sha256Json(rest);
}

export function checkpointsDir(c: TrainConfig): string {
  return path.join(c.outputDir, 'checkpoints');
}

/** Complete checkpoints, oldest first. */
export function listCheckpoints(c: TrainConfig): string[] {
  const dir = checkpointsDir(c);
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir)
    .filter((n) => /^checkpoint-\d+$/.test(n) && fs.existsSync(path.join(dir, n, 'state.json')))
    .sort((a, b) => Number(a.split('-')[1]) - Number(b.split('-')[1]))
    .map((n) => path.join(dir, n));
}

export interface RunHandle {
  adapter: Adapter;
  optimizer: Optimizer;
}

/** `writeRankState` (data-parallel runs) writes the per-rank files into the checkpoint's folder. */
export function saveCheckpoint(
  c: TrainConfig,
  state: CheckpointState,
  runs: RunHandle[],
  writeRankState: ((dir: string) => void) | null = null,
): string {
  const target = path.join(checkpointsDir(c), `checkpoint-${state.fusedStep}`);
  const perRank = (state.worldSize ?? 1) > 1;
  tidy(() =>
    noGrad(() => {
      writeDirAtomic(
        target,
        (dir) => {
          runs.forEach(({ adapter, optimizer }) => {
            const tensors = new Map<string, Tensor>();
            for (const p of adapter.parameters()) {
              tensors.set(`param.${p.name}`, p.tensor.detach().to('cpu'));
              const g = perRank ? null : p.tensor.grad;
              if (g) tensors.set(`grad.${p.name}`, g.to('cpu'));
            }
            for (const [k, t] of Object.entries(optimizer.stateDict().tensors)) tensors.set(`optim.${k}`, t.to('cpu'));
            saveSafetensors(path.join(dir, `${adapter.name}.safetensors`), tensors);
          });
          if (writeRankState) writeRankState(dir);
          else
            saveSafetensors(
              path.join(dir, 'rng.safetensors'),
              Object.fromEntries(state.rngDevices.map((d) => [d, getRngState(d as Device)])),
            );
          writeFileAtomic(path.join(dir, 'state.json'), JSON.stringify(state, null, 1) + '\n');
        },
        { replace: true },
      );
    }),
  );
  if (c.saveTotalLimit !== null) {
    const all = listCheckpoints(c);
    for (const old of all.slice(0, Math.max(0, all.length - c.saveTotalLimit)))
      fs.rmSync(old, { recursive: true, force: true });
  }
  return target;
}

export function readCheckpointState(dir: string): CheckpointState {
  const file = path.join(dir, 'state.json');
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as CheckpointState;
  } catch (e) {
    throw new UserError(`${file}: unreadable checkpoint state (${(e as Error).message})`);
  }
}

/** Puts parameters, gradients, optimizer state and generator states back (with several ranks, the
 * caller restores each rank's gradients and generators from its own file: rank-state.ts). */
export function restoreCheckpoint(dir: string, state: CheckpointState, runs: RunHandle[]): void {
  const perRank = (state.worldSize ?? 1) > 1;
  runs.forEach(({ adapter, optimizer }) => {
    const saved = state.adapters.find((a) => a.name === adapter.name);
    if (!saved) throw new UserError(`${dir}: no state for adapter '${adapter.name}'`);
    const { tensors } = loadAll(path.join(dir, `${adapter.name}.safetensors`));
    try {
      noGrad(() => {
        for (const p of adapter.parameters()) {
          const t = tensors.get(`param.${p.name}`);
          if (!t || t.shape.join(',') !== p.tensor.shape.join(','))
            throw new UserError(`${dir}: checkpoint tensor param.${p.name} is missing or has another shape`);
          p.tensor.copy_(t);
          if (perRank) continue;
          const g = tensors.get(`grad.${p.name}`);
          p.tensor.grad = g ? g.to(p.tensor.device) : null;
        }
      });
      const optimTensors: Record<string, Tensor> = {};
      for (const [k, t] of tensors) if (k.startsWith('optim.')) optimTensors[k.slice('optim.'.length)] = t;
      optimizer.loadStateDict(
        { ...saved.optimizer, tensors: optimTensors },
        path.join(dir, `${adapter.name}.safetensors`),
      );
    } finally {
      for (const t of tensors.values()) t.dispose();
    }
  });
  if (perRank) return;
  const { tensors: rng } = loadAll(path.join(dir, 'rng.safetensors'));
  for (const [device, t] of rng) {
    setRngState(t, device as Device);
    t.dispose();
  }
}
