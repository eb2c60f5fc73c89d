// Training several adapters at once over one frozen base model (the m-LoRA side of MixLoRA).
// Read top to bottom: set up (model, adapters, data, optimizers; or a checkpoint), then the loop:
// every fused step takes the next micro-batch of each running adapter, runs one forward and backward
// pass, and steps each adapter whose optimizer-step batch is complete; adapters that finish drop out.
import fs from 'node:fs';
import path from 'node:path';
import { manualSeed } from '../tensor/runtime.js';
import { zeroGrad } from '../tensor/autograd.js';
import { loadModelForTraining, parseDevice, parseDType } from '../models/load.js';
import { resolveModel } from '../models/hub.js';
import { Adapter } from '../adapters/adapter.js';
import { adapterElementCount, loadAdapter, saveAdapter } from '../adapters/io.js';
import type { AdapterConfig } from '../adapters/config.js';
import type { ModelConfig } from '../models/config.js';
import { parameterCount } from '../models/weights.js';
import { describeAdapter } from '../adapters/config.js';
import { AdamW, SGD, clipGradNorm, type Optimizer } from '../optim/index.js';
import { loadExamples, scoredTokens, type DatasetStats, type Example } from '../data/examples.js';
import type { TextTokenizer } from '../tokenizer/tokenizer.js';
import { appendFileChecked, writeFileAtomic } from '../io/atomic.js';
import { UserError } from '../util/errors.js';
import { writeChart } from '../io/charts.js';
import { lossCurveSpec, type LossPoint } from './loss-chart.js';
import type { Progress, ProgressBar } from '../cli/progress.js';
import type { AdapterTrainConfig, TrainConfig } from './config.js';
import { DataOrder } from './order.js';
import { openOutputDir } from './output-dir.js';
import { lrMultiplier, warmupSteps } from './schedule.js';
import { fusedStep, type MicroBatch } from './step.js';
import { RunReports } from './eval-during.js';
import {
  checkpointsDir,
  configDigest,
  listCheckpoints,
  readCheckpointState,
  restoreCheckpoint,
  saveCheckpoint,
  type CheckpointState,
  type StepAccumulator,
} from './checkpoint.js';

export interface MetricsLine {
  adapter: string;
  step: number;
  epoch: number;
  loss: number;
  aux: number | null;
  lr: number;
  tokens: number;
  tokens_per_s: number;
  grad_norm: number | null;
}

interface AdapterRun {
  cfg: AdapterTrainConfig;
  adapter: Adapter;
  optimizer: Optimizer;
  examples: Example[];
  stats: DatasetStats;
  order: DataOrder;
  totalSteps: number;
  warmup: number;
  step: number;
  micro: number;
  done: boolean;
  acc: StepAccumulator;
  bar: ProgressBar | null;
}

export interface TrainResult {
  outputs: Record<string, string>;
  metricsFile: string;
  charts: string[];
  fusedSteps: number;
  resumedFrom: string | null;
}

const emptyAcc = (): StepAccumulator => ({ ce: 0, aux: 0, auxCount: 0, scored: 0, input: 0, seconds: 0 });

/** Trains the config's adapters into its output_dir, which is checked (nothing there but a previous
 * run's own files) and locked for the run's life (see output-dir.ts). */
export interface TrainOptions {
  resume?: boolean;
  progress?: Progress;
  /** base_model already resolved to a local path by the caller (e.g. a Hub id it downloaded). */
  modelPath?: string;
}

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

  // ---- the run's folder: a new run, or the one being resumed -----------------------------------
  const checkpoints = listCheckpoints(cfg);
  if (!opts.resume && (checkpoints.length > 0 || fs.existsSync(metricsFile))) {
    throw new UserError(
      `${cfg.outputDir} already holds a training run: continue it with --resume, or choose another output_dir`,
    );
  }
  const resumeFrom = opts.resume && checkpoints.length > 0 ? checkpoints[checkpoints.length - 1]! : null;
  const state = resumeFrom ? readCheckpointState(resumeFrom) : null;
  if (state && state.configDigest !== configDigest(cfg)) {
    throw new UserError(
      `${resumeFrom}: the config changed since this checkpoint was written; resume with the same config, or start a new output_dir`,
    );
  }
  if (opts.resume && !resumeFrom) log('no complete checkpoint found: starting from the beginning');
  if (opts.resume) removeUnfinishedCheckpoints(cfg);

  // ---- model, adapters, data, optimizers -------------------------------------------------------
  manualSeed(cfg.seed);
  const { model, tokenizer } = loadModelForTraining(opts.modelPath ?? (await resolveModel(cfg.baseModel)), {
    dtype: parseDType(cfg.dtype, 'dtype'),
    device: parseDevice(cfg.device),
    tokenizer: cfg.tokenizer,
    quantize: cfg.quantize ?? null,
  });
  const runs: AdapterRun[] = [];
  for (const a of cfg.adapters) {
    // Each adapter's initial weights depend on the seed and its name only, not on the other adapters.
    manualSeed(initSeed(cfg.seed, a.name));
    if (a.adapter) checkAdapterSize(cfg, a.name, a.adapter, model.config);
    const adapter = a.initFrom
      ? await loadAdapter(a.initFrom, model, a.name)
      : Adapter.create(a.name, { ...a.adapter!, baseModel: cfg.baseModel }, model);
    adapter.requiresGrad_();
    const { examples, stats } = loadAllExamples(a, tokenizer, cfg.cutoffLen, model.config.vocabSize);
    const maxPos = model.config.maxPositionEmbeddings;
    const over = examples.filter((e) => e.inputIds.length > maxPos).length;
    if (over > 0)
      log(
        `warning: ${a.name}: ${over} examples are longer than the model's max_position_embeddings (${maxPos}); lower cutoff_len to ${maxPos} to stay in the model's range`,
      );
    const order = new DataOrder(
      examples.map((e) => e.inputIds.length),
      a.batchSize,
      cfg.seed,
      nameHash(a.name),
      cfg.groupByLength,
    );
    const totalSteps = Math.min(Math.ceil(order.stepsPerEpoch * a.numEpochs), a.maxSteps ?? Number.POSITIVE_INFINITY);
    const params = adapter.parameters().map((p) => p.tensor);
    const optimizer =
      a.optimizer === 'adamw'
        ? new AdamW(params, { lr: a.lr, betas: a.betas, eps: a.eps, weightDecay: a.weightDecay })
        : new SGD(params, { lr: a.lr, momentum: a.momentum, weightDecay: a.weightDecay });
    runs.push({
      cfg: a,
      adapter,
      optimizer,
      examples,
      stats,
      order,
      totalSteps,
      warmup: warmupSteps(totalSteps, a.warmupSteps, a.warmupRatio),
      step: 0,
      micro: 0,
      done: false,
      acc: emptyAcc(),
      bar: null,
    });
    log(
      `${a.name}: ${describeAdapter(adapter.config)}, ${adapter.parameterCount().toLocaleString('en-US')} trainable parameters; ` +
        `${examples.length} examples (${stats.truncated} truncated to ${cfg.cutoffLen} tokens${stats.droppedUnscored ? `, ${stats.droppedUnscored} dropped with nothing to score` : ''}), ` +
        `${totalSteps} steps of ${a.batchSize} (micro-batches of ${a.microBatchSize})`,
    );
  }
  manualSeed(cfg.seed);
  let fused = 0;
  if (state && resumeFrom) {
    restoreCheckpoint(resumeFrom, state, runs);
    for (const r of runs) Object.assign(r, pick(state.adapters.find((x) => x.name === r.cfg.name)!));
    fused = state.fusedStep;
    truncateLines(metricsFile, state.metricsLines);
    log(`resumed from ${resumeFrom} (fused step ${fused})`);
  } else {
    // Starting from the beginning (a new run, or one killed before its first checkpoint): metrics of
    // a previous attempt would not match this run's state.
    if (fs.existsSync(metricsFile)) truncateLines(metricsFile, 0);
    writeFileAtomic(path.join(cfg.outputDir, 'train_config.json'), JSON.stringify(cfg, null, 2) + '\n');
  }
  const reports = new RunReports(cfg, model, tokenizer, metricsFile, log, tokenizer?.padId ?? 0);
  for (const r of runs) {
    r.bar = opts.progress?.bar(r.cfg.name, r.totalSteps) ?? null;
    r.bar?.update(r.step);
  }

  // ---- the loop ----------------------------------------------------------------------------------
  const outputs: Record<string, string> = {};
  const padId = tokenizer?.padId ?? 0;
  while (runs.some((r) => !r.done)) {
    const active = runs.filter((r) => !r.done);
    const micro = active.map((r) => nextMicroBatch(r));
    const started = performance.now();
    const results = fusedStep(model, micro, { recompute: cfg.recompute, padId });
    const seconds = (performance.now() - started) / 1000;
    fused++;
    let checkpointDue = false;
    const stepped: AdapterRun[] = [];
    active.forEach((r, i) => {
      const res = results[i]!;
      r.acc.ce += res.ce;
      if (res.aux !== null) {
        r.acc.aux += res.aux;
        r.acc.auxCount++;
      }
      r.acc.scored += res.scoredTokens;
      r.acc.input += res.inputTokens;
      r.acc.seconds += seconds;
      r.micro++;
      if (r.micro < microsPerStep(r)) return;
      reports.trainStep(optimizerStep(r, metricsFile));
      stepped.push(r);
      if (r.done) outputs[r.cfg.name] = finish(r, cfg, log);
      if (cfg.saveSteps > 0 && r.step % cfg.saveSteps === 0) checkpointDue = true;
    });
    reports.afterSteps(stepped.map((r) => ({ ...r, epoch: r.step / r.order.stepsPerEpoch })));
    const finished = runs.every((r) => r.done);
    if (checkpointDue || finished) {
      const where = saveCheckpoint(cfg, checkpointState(cfg, runs, fused, metricsFile), runs);
      if (!finished) log(`checkpoint ${where}`);
    }
  }
  for (const r of runs) {
    r.bar?.stop();
    r.optimizer.dispose();
    r.adapter.dispose();
  }
  model.dispose();
  const charts = await writeChart(
    lossCurveSpec(readMetrics(metricsFile), `training loss (${path.basename(cfg.outputDir)})`),
    path.join(cfg.outputDir, 'loss'),
  );
  charts.push(...(await reports.finish()));
  for (const a of cfg.adapters) outputs[a.name] ??= path.join(cfg.outputDir, a.name);
  return { outputs, metricsFile, charts, fusedSteps: fused, resumedFrom: resumeFrom };
}

/** An adapter bigger than its base model is a typo in r or num_experts (r: 1000000000 would ask for
 * terabytes): refused before anything is allocated. */
function checkAdapterSize(cfg: TrainConfig, name: string, c: AdapterConfig, mc: ModelConfig): void {
  const n = adapterElementCount(c, mc);
  const base = parameterCount(mc);
  if (n > Math.max(4 * base, 2 ** 24))
    throw new UserError(
      `${cfg.file}: adapter '${name}' would have ${n.toLocaleString('en-US')} parameters, more than 4 times its base model's ${base.toLocaleString('en-US')}: check r and num_experts`,
    );
}

/** FNV-1a of the adapter's name: its init and data order depend on it, not on its place in the list. */
function nameHash(name: string): number {
  let h = 2166136261;
  for (const ch of name) h = Math.imul(h ^ ch.charCodeAt(0), 16777619) >>> 0;
  return h;
}

function initSeed(seed: number, name: string): number {
  return (seed * 1000003 + nameHash(name)) % 2 ** 48;
}

function loadAllExamples(
  a: AdapterTrainConfig,
  tokenizer: TextTokenizer | null,
  cutoffLen: number,
  vocabSize: number,
): { examples: Example[]; stats: DatasetStats } {
  const examples: Example[] = [];
  const stats: DatasetStats = { records: 0, truncated: 0, droppedUnscored: 0, tokens: 0, scoredTokens: 0 };
  for (const file of a.data) {
    const part = loadExamples(file, tokenizer, {
      template: a.promptTemplate,
      trainOnInputs: a.trainOnInputs,
      cutoffLen,
      vocabSize,
    });
    examples.push(...part.examples);
    for (const k of Object.keys(stats) as (keyof DatasetStats)[]) stats[k] += part.stats[k];
  }
  return { examples, stats };
}

// ---- one adapter's batches and steps --------------------------------------------------------------

function stepExamples(r: AdapterRun): Example[] {
  return r.order.batch(r.step).map((i) => r.examples[i]!);
}

function microsPerStep(r: AdapterRun): number {
  return Math.ceil(stepExamples(r).length / r.cfg.microBatchSize);
}

function nextMicroBatch(r: AdapterRun): MicroBatch {
  const batch = stepExamples(r);
  return {
    adapter: r.adapter,
    examples: batch.slice(r.micro * r.cfg.microBatchSize, (r.micro + 1) * r.cfg.microBatchSize),
    stepTokens: batch.reduce((n, e) => n + scoredTokens(e), 0),
    microsPerStep: Math.ceil(batch.length / r.cfg.microBatchSize),
  };
}

/** The optimizer step once all micro-batches of the step batch have added their gradients. */
function optimizerStep(r: AdapterRun, metricsFile: string): MetricsLine {
  const lr = r.cfg.lr * lrMultiplier(r.cfg.scheduler, r.step, r.totalSteps, r.warmup);
  r.optimizer.lr = lr;
  const params = r.adapter.parameters().map((p) => p.tensor);
  const gradNorm = r.cfg.maxGradNorm !== null ? clipGradNorm(params, r.cfg.maxGradNorm) : null;
  r.optimizer.step();
  zeroGrad(params);
  r.step++;
  const line: MetricsLine = {
    adapter: r.cfg.name,
    step: r.step,
    epoch: r.step / r.order.stepsPerEpoch,
    loss: r.acc.ce,
    aux: r.acc.auxCount > 0 ? r.acc.aux / r.acc.auxCount : null,
    lr,
    tokens: r.acc.scored,
    tokens_per_s: r.acc.input / Math.max(r.acc.seconds, 1e-9),
    grad_norm: gradNorm,
  };
  appendFileChecked(metricsFile, JSON.stringify(line) + '\n');
  r.bar?.update(r.step, {
    loss: line.loss.toFixed(4),
    ...(line.aux !== null ? { aux: line.aux.toFixed(4) } : {}),
    'tok/s': Math.round(line.tokens_per_s),
  });
  r.micro = 0;
  r.acc = emptyAcc();
  if (r.step >= r.totalSteps) r.done = true;
  return line;
}

function finish(r: AdapterRun, cfg: TrainConfig, log: (s: string) => void): string {
  const out = path.join(cfg.outputDir, r.cfg.name);
  saveAdapter(out, r.adapter, { baseModel: cfg.baseModel, formats: cfg.saveFormats });
  log(`${r.cfg.name}: done after ${r.step} steps, saved to ${out}`);
  return out;
}

// ---- checkpoints and metrics --------------------------------------------------------------------

function checkpointState(cfg: TrainConfig, runs: AdapterRun[], fused: number, metricsFile: string): CheckpointState {
  const devices = ['cpu', ...(cfg.device.startsWith('cuda') ? [cfg.device] : [])];
  return {
    format: 1,
    fusedStep: fused,
    configDigest: configDigest(cfg),
    metricsLines: countLines(metricsFile),
    rngDevices: devices,
    adapters: runs.map((r) => {
      const { tensors: _t, ...optimizer } = r.optimizer.stateDict();
      void _t;
      return { name: r.cfg.name, step: r.step, micro: r.micro, done: r.done, acc: { ...r.acc }, optimizer };
    }),
  };
}

function pick(a: { step: number; micro: number; done: boolean; acc: StepAccumulator }) {
  return { step: a.step, micro: a.micro, done: a.done, acc: { ...a.acc } };
}

/** Checkpoints a killed run was still writing (temporary names; never looked complete). */
function removeUnfinishedCheckpoints(cfg: TrainConfig): void {
  const dir = checkpointsDir(cfg);
  if (!fs.existsSync(dir)) return;
  for (const n of fs.readdirSync(dir))
    if (/^\.checkpoint-\d+\.tmp-/.test(n)) fs.rmSync(path.join(dir, n), { recursive: true, force: true });
}

function countLines(file: string): number {
  return fs.existsSync(file)
    ? fs
        .readFileSync(file, 'utf8')
        .split('\n')
        .filter((l) => l.trim()).length
    : 0;
}

function truncateLines(file: string, n: number): void {
  const lines = fs.existsSync(file)
    ? fs
        .readFileSync(file, 'utf8')
        .split('\n')
        .filter((l) => l.trim())
    : [];
  writeFileAtomic(
    file,
    lines
      .slice(0, n)
      .map((l) => `${l}\n`)
      .join(''),
  );
}

export function readMetrics(file: string): LossPoint[] {
  if (!fs.existsSync(file)) return [];
  return fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as MetricsLine & { split?: string })
    .filter((m) => m.split !== 'eval') // evaluation lines (eval-during.ts)
    .map((m) => {
      return { adapter: m.adapter, step: m.step, loss: m.loss, aux: m.aux };
    });
}
