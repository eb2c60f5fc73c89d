// Setting up a run: the frozen model, then per adapter its weights (fresh or init_from), examples, data
// order, step count and optimizer. An adapter's initial weights and data order depend on the seed and
// its name only, not on the other adapters or its place in the list.
import { manualSeed } from '../tensor/runtime.js';
import { describeCompute } from '../tensor/compute-mode.js';
import { parseDevice, parseDType } from '../tensor/targets.js';
import { loadModelForTraining } from '../models/load.js';
import { resolveModel } from '../models/hub.js';
import type { CausalLM } from '../models/causal-lm.js';
import { residentBytes } from '../models/frozen-linear.js';
import { SOLO, type Group } from '../distributed/group.js';
import type { ModelConfig } from '../models/config.js';
import { parameterCount } from '../models/weights.js';
import { Adapter } from '../adapters/adapter.js';
import { loadAdapter } from '../adapters/io.js';
import { adapterElementCount } from '../adapters/params.js';
import { describeAdapter, type AdapterConfig } from '../adapters/config.js';
import { AdamW, AdamW8bit, SGD, type Optimizer } from '../optim/index.js';
import type { Tensor } from '../tensor/tensor.js';
import { loadExamples, type DatasetStats, type Example } from '../data/examples.js';
import type { TextTokenizer } from '../tokenizer/tokenizer.js';
import { UserError } from '../util/errors.js';
import type { ProgressBar } from '../util/progress.js';
import type { AdapterTrainConfig, TrainConfig } from './config.js';
import type { StepTotals } from './checkpoint.js';
import { DataOrder } from './order.js';
import { freshEarlyStop, type EarlyStopState } from './early-stopping.js';
import { warmupSteps } from './schedule.js';
import { ShardedOptimizer } from './sharded-optimizer.js';

/** One adapter being trained: its config, state and progress. */
export interface AdapterRun {
  cfg: AdapterTrainConfig;
  adapter: Adapter;
  optimizer: Optimizer;
  examples: Example[];
  stats: DatasetStats;
  order: DataOrder;
  totalSteps: number;
  warmup: number;
  /** Optimizer steps taken. */
  step: number;
  /** Micro-batches of the current optimizer step already through a fused step. */
  microBatchesDone: number;
  done: boolean;
  /** Loss, tokens and time summed over the current optimizer step's micro-batches. */
  stepTotals: StepTotals;
  /** With early_stopping: its best value and patience so far (kept by rank 0, which evaluates). */
  earlyStop: EarlyStopState | null;
  bar: ProgressBar | null;
}

export const emptyStepTotals = (): StepTotals => ({
  ce: 0,
  aux: 0,
  auxCount: 0,
  scored: 0,
  input: 0,
  seconds: 0,
});

export interface RunSetup {
  model: CausalLM;
  tokenizer: TextTokenizer | null;
  runs: AdapterRun[];
}

/** `device`: where this process's model lives (the config's device, or cuda:LOCAL_RANK for a rank). */
export async function setUpRuns(
  cfg: TrainConfig,
  modelPath: string | undefined,
  log: (s: string) => void,
  device: string = cfg.device,
  group: Group = SOLO,
): Promise<RunSetup> {
  manualSeed(cfg.seed);
  const { model, tokenizer, compute } = loadModelForTraining(modelPath ?? (await resolveModel(cfg.baseModel)), {
    dtype: parseDType(cfg.dtype, 'dtype'),
    ...(cfg.bf16Compute ? { bf16Compute: cfg.bf16Compute } : {}),
    device: parseDevice(device, '--device'),
    tokenizer: cfg.tokenizer,
    quantize: cfg.quantize ?? null,
    shard: cfg.shardBase ? group : null,
  });
  if (compute.weights !== 'float32') log(`base model: ${describeCompute(compute)}`);
  if (model.residency) {
    const mib = (b: number) => (b / 2 ** 20).toFixed(1);
    log(
      `base model: sharded over ${group.worldSize} rank${group.worldSize > 1 ? 's' : ''}: ${mib(model.residency.residentBytes)} MiB of its ${mib(residentBytes(model.weights))} MiB held by this rank, each unit gathered around its use`,
    );
  }
  const runs: AdapterRun[] = [];
  const files: ExampleFiles = new Map();
  for (const a of cfg.adapters) runs.push(await setUpRun(cfg, a, model, tokenizer, files, log, group));
  manualSeed(cfg.seed);
  return { model, tokenizer, runs };
}

async function setUpRun(
  cfg: TrainConfig,
  a: AdapterTrainConfig,
  model: CausalLM,
  tokenizer: TextTokenizer | null,
  files: ExampleFiles,
  log: (s: string) => void,
  group: Group,
): Promise<AdapterRun> {
  manualSeed(initSeed(cfg.seed, a.name));
  if (a.adapter) checkAdapterSize(cfg, a.name, a.adapter, model.config);
  const adapter = a.initFrom
    ? await loadAdapter(a.initFrom, model, a.name)
    : Adapter.create(a.name, { ...a.adapter!, baseModel: cfg.baseModel }, model);
  adapter.requiresGrad_();
  const { examples, stats } = loadAllExamples(a, tokenizer, cfg.cutoffLen, model.config.vocabSize, files);
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
  const makeOptimizer = (own: Tensor[]): Optimizer =>
    a.optimizer === 'sgd'
      ? new SGD(own, { lr: a.lr, momentum: a.momentum, weightDecay: a.weightDecay })
      : new (a.optimizer === 'adamw8bit' ? AdamW8bit : AdamW)(own, {
          lr: a.lr,
          betas: a.betas,
          eps: a.eps,
          weightDecay: a.weightDecay,
        });
  const optimizer =
    cfg.shardOptimizer && group.worldSize > 1
      ? new ShardedOptimizer(params, group, makeOptimizer)
      : makeOptimizer(params);
  if (optimizer instanceof ShardedOptimizer)
    log(
      `${a.name}: optimizer state sharded over ${group.worldSize} ranks: this rank keeps that of ` +
        `${optimizer.ownedValues.toLocaleString('en-US')} of ${adapter.parameterCount().toLocaleString('en-US')} parameter values`,
    );
  log(
    `${a.name}: ${describeAdapter(adapter.config)}, ${adapter.parameterCount().toLocaleString('en-US')} trainable parameters; ` +
      `${examples.length} examples (${stats.truncated} truncated to ${cfg.cutoffLen} tokens${stats.droppedUnscored ? `, ${stats.droppedUnscored} dropped with nothing to score` : ''}), ` +
      `${totalSteps} steps of ${a.batchSize} (micro-batches of ${a.microBatchSize})`,
  );
  return {
    cfg: a,
    adapter,
    optimizer,
    examples,
    stats,
    order,
    totalSteps,
    warmup: warmupSteps(totalSteps, a.warmupSteps, a.warmupRatio),
    step: 0,
    microBatchesDone: 0,
    done: false,
    stepTotals: emptyStepTotals(),
    earlyStop: a.earlyStopping ? freshEarlyStop() : null,
    bar: null,
  };
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

/** A run's tokenised files, by file and the options that shape its examples: adapters that train on the
 * same data (the demo's two) read and tokenise it once. The examples are shared, never changed. */
type ExampleFiles = Map<string, ReturnType<typeof loadExamples>>;

function loadAllExamples(
  a: AdapterTrainConfig,
  tokenizer: TextTokenizer | null,
  cutoffLen: number,
  vocabSize: number,
  files: ExampleFiles,
): { examples: Example[]; stats: DatasetStats } {
  const examples: Example[] = [];
  const stats: DatasetStats = { records: 0, truncated: 0, droppedUnscored: 0, tokens: 0, scoredTokens: 0 };
  a.data.forEach((file, i) => {
    const options = {
      sharegpt: a.dataFormats?.[i] ?? null,
      template: a.promptTemplate,
      trainOnInputs: a.trainOnInputs,
      cutoffLen,
      vocabSize,
    };
    const key = JSON.stringify([file, options]);
    const part = files.get(key) ?? loadExamples(file, tokenizer, options);
    files.set(key, part);
    examples.push(...part.examples);
    for (const k of Object.keys(stats) as (keyof DatasetStats)[]) stats[k] += part.stats[k];
  });
  return { examples, stats };
}
