// The training config (JSON or YAML): the base model, where outputs go, and one entry per adapter
// with its own adapter settings, data and optimisation. Unknown keys and bad values are refused with
// the file, line and field named.
import fs from 'node:fs';
import path from 'node:path';
import { parseAdapterConfig, type AdapterConfig } from '../adapters/config.js';
import { Fields } from '../util/fields.js';
import { pathText, readConfigFile, type ConfigFile } from '../util/config-file.js';
import { UserError } from '../util/errors.js';
import { isDType, type DType } from '../tensor/dtype.js';
import { BF16_COMPUTE, isBf16Compute, type Bf16Compute } from '../tensor/compute-mode.js';
import type { WeightsFormat } from '../adapters/files.js';
import { isModelId } from '../models/hub.js';
import { isQuantFormat, QUANT_FORMATS, type QuantFormat } from '../quant/format.js';
import {
  parseEvalBlock,
  parseReportTo,
  parseSaveFormats,
  type EvalDuringConfig,
  type ReportTarget,
} from './config-workflow.js';
import { adapterNameProblem } from './output-dir.js';
import { parseEarlyStopping, type EarlyStoppingConfig } from './early-stopping.js';
import { SHAREGPT_COLUMNS, SHAREGPT_DEFAULTS, SHAREGPT_TAGS, type ShareGptFormat } from '../data/sharegpt.js';

export type OptimizerName = 'adamw' | 'adamw8bit' | 'sgd';
export type SchedulerName = 'constant' | 'linear' | 'cosine';

export interface AdapterTrainConfig {
  name: string;
  /** From `adapter:` or, with `init_from`, from the saved adapter's config. */
  adapter: AdapterConfig | null;
  initFrom: string | null;
  /** One or more data files (concatenated: a multi-task mix). */
  data: string[];
  /** Per data file, the ShareGPT mapping its data block gives (null: records detected by shape). Absent when no
   * file has one, so the digest of configs without data blocks is unchanged (their checkpoints still resume). */
  dataFormats?: (ShareGptFormat | null)[];
  promptTemplate: string;
  trainOnInputs: boolean;
  optimizer: OptimizerName;
  lr: number;
  weightDecay: number;
  momentum: number;
  betas: [number, number];
  eps: number;
  batchSize: number;
  microBatchSize: number;
  numEpochs: number;
  maxSteps: number | null;
  scheduler: SchedulerName;
  warmupSteps: number | null;
  warmupRatio: number;
  maxGradNorm: number | null;
  /** End this adapter when its eval metric stops improving (absent: it runs its steps; absent rather than null
   * so that the digest of configs without it is unchanged). */
  earlyStopping?: EarlyStoppingConfig;
  /** Rows of up to cutoff_len tokens holding several whole examples of a micro-batch (absent: one example a
   * row; absent rather than false so that the digest of configs without it is unchanged). */
  packing?: true;
}

export interface TrainConfig {
  file: string;
  /** A local folder or .bin (absolute), or a Hugging Face model id (org/name[@revision]). */
  baseModel: string;
  tokenizer: string | null;
  outputDir: string;
  seed: number;
  cutoffLen: number;
  saveSteps: number;
  saveTotalLimit: number | null;
  dtype: DType;
  /** How a bfloat16 base computes (src/tensor/compute-mode.ts); absent: auto (or MIXLORA_BF16_COMPUTE). Absent
   * rather than 'auto' so that the digest of configs without it is unchanged. */
  bf16Compute?: Bf16Compute;
  device: string;
  /** Keep the base's decoder projections quantised (QLoRA). Absent, not null, when not set, so the digest
   * of configs written before this key existed is unchanged (their checkpoints still resume). */
  quantize?: QuantFormat;
  /** Recompute each decoder layer's activations in the backward pass instead of storing them. */
  recompute: boolean;
  /** Each adapter's optimizer step runs layer by layer inside the recomputed backward pass, and each layer's
   * gradients are freed once applied (torchtune's optimizer_in_bwd). Absent when off (digests unchanged). */
  optimizerInBackward?: true;
  /** Under a launcher, each rank keeps 1/W of the frozen base and gathers each unit around its use
   * (src/models/sharded-base.ts). Absent when off (digests unchanged). */
  shardBase?: true;
  /** Under a launcher, each rank keeps the optimizer state of its own share of the adapters' parameters
   * (ZeRO stage 1; src/train/sharded-optimizer.ts). Absent when off (digests unchanged). */
  shardOptimizer?: true;
  groupByLength: boolean;
  /** Weight files of each saved adapter (and best adapter). */
  saveFormats: WeightsFormat[];
  reportTo: ReportTarget[];
  eval: EvalDuringConfig | null;
  adapters: AdapterTrainConfig[];
}

/** Paths in the config are relative to the config file. */
function resolvePath(cf: ConfigFile, p: string): string {
  return path.isAbsolute(p) ? p : path.resolve(path.dirname(cf.file), p);
}

/** `data`: a file, or a list of files and data blocks {file, formatting: sharegpt, columns, tags} (LLaMA-Factory's
 * dataset_info.json keys; `file_name` is read as `file`). */
function dataFiles(cf: ConfigFile, f: Fields, i: number): { files: string[]; formats: (ShareGptFormat | null)[] } {
  const v = f.raw('data');
  const list = typeof v === 'string' || (v !== null && typeof v === 'object' && !Array.isArray(v)) ? [v] : v;
  if (!Array.isArray(list) || list.length === 0)
    f.fail('data', 'must be a file, a data block {file, columns, tags}, or a list of them');
  const files: string[] = [];
  const formats: (ShareGptFormat | null)[] = [];
  (list as unknown[]).forEach((entry, j) => {
    if (typeof entry === 'string') {
      files.push(resolvePath(cf, entry));
      formats.push(null);
      return;
    }
    const at = Array.isArray(v) ? ['adapters', i, 'data', j] : ['adapters', i, 'data'];
    const where = `${cf.file}: ${pathText(at)}`;
    const b = Fields.of(entry, where, (key) => cf.locate([...at, key]));
    if (b.has('file') && b.has('file_name')) b.fail('file_name', 'and file both given: choose one');
    const file = b.has('file_name') ? b.str('file_name') : b.str('file');
    b.raw('file');
    b.str('formatting', { default: 'sharegpt', oneOf: ['sharegpt'] as const });
    const format: ShareGptFormat = { ...SHAREGPT_DEFAULTS };
    const mapping = (key: 'columns' | 'tags', known: Record<string, keyof ShareGptFormat>) => {
      if (!b.has(key)) return void b.raw(key);
      const m = Fields.of(b.raw(key), `${where}.${key}`, (k) => cf.locate([...at, key, k]));
      if (key === 'columns' && m.has('tools'))
        m.fail(
          'tools',
          'is not supported: tool descriptions are not passed to the chat template (put them in the system turn)',
        );
      for (const [name, field] of Object.entries(known)) {
        const given = m.optStr(name);
        if (given !== null) (format[field] as string | null) = given;
      }
      m.rejectUnknown();
    };
    mapping('columns', SHAREGPT_COLUMNS);
    mapping('tags', SHAREGPT_TAGS);
    b.rejectUnknown();
    const roles = [format.userTag, format.assistantTag, format.observationTag, format.functionTag, format.systemTag];
    const dup = roles.find((r, k) => roles.indexOf(r) !== k);
    if (dup !== undefined) b.fail('tags', `give '${dup}' to two roles: each role needs its own tag`);
    files.push(resolvePath(cf, file));
    formats.push(format);
  });
  return { files, formats };
}

/** What an adapter entry needs from the top level. */
interface Shared {
  eval: EvalDuringConfig | null;
  /** The top-level early_stopping: every adapter's unless it has its own. */
  earlyStopping: EarlyStoppingConfig | null;
}

function adapterEntry(cf: ConfigFile, value: unknown, i: number, shared: Shared): AdapterTrainConfig {
  const at = (key: string) => cf.locate(['adapters', i, key]);
  const f = Fields.of(value, `${cf.file}: adapters[${i}]`, at);
  const name = f.str('name');
  const nameProblem = adapterNameProblem(name);
  if (nameProblem) f.fail('name', nameProblem);
  const initFrom = f.optStr('init_from');
  let adapter: AdapterConfig | null = null;
  if (f.has('adapter')) {
    if (initFrom) f.fail('adapter', 'and init_from both given: init_from brings its own config');
    adapter = parseAdapterConfig(
      f.raw('adapter'),
      `${cf.file}: adapters[${i}].adapter`,
      (key) => cf.locate(['adapters', i, 'adapter', key]),
      { strict: true },
    );
  } else if (!initFrom) {
    f.fail('adapter', 'is required (or init_from)');
  }
  const optimizer = f.str<OptimizerName>('optimizer', {
    default: 'adamw',
    oneOf: ['adamw', 'adamw8bit', 'sgd'] as const,
  });
  const batchSize = f.int('batch_size', { default: 16, min: 1 });
  const microBatchSize = f.int('micro_batch_size', { default: batchSize, min: 1 });
  if (microBatchSize > batchSize)
    f.fail('micro_batch_size', `(${microBatchSize}) is larger than batch_size (${batchSize})`);
  const betas = f.raw('betas');
  if (
    betas !== undefined &&
    !(Array.isArray(betas) && betas.length === 2 && betas.every((b) => typeof b === 'number' && b >= 0 && b < 1))
  ) {
    f.fail('betas', 'must be [beta1, beta2] with 0 <= beta < 1');
  }
  const momentum = f.num('momentum', { default: 0, min: 0, max: 1 });
  if (optimizer !== 'sgd' && momentum !== 0) f.fail('momentum', 'applies to sgd only');
  const warmupSteps = f.optInt('warmup_steps', { min: 0 });
  const warmupRatio = f.num('warmup_ratio', { default: 0, min: 0, max: 1 });
  const data = dataFiles(cf, f, i);
  const earlyStopping = f.has('early_stopping')
    ? parseEarlyStopping(cf, f.raw('early_stopping'), ['adapters', i, 'early_stopping'], shared.eval)
    : (f.raw('early_stopping'), shared.earlyStopping);
  if (warmupSteps !== null && warmupRatio > 0) f.fail('warmup_steps', 'and warmup_ratio both given: choose one');
  const entry: AdapterTrainConfig = {
    name,
    adapter,
    initFrom: initFrom ? resolvePath(cf, initFrom) : null,
    data: data.files,
    ...(data.formats.some((x) => x !== null) ? { dataFormats: data.formats } : {}),
    promptTemplate: f.str('prompt_template', { default: 'alpaca' }),
    trainOnInputs: f.bool('train_on_inputs', false),
    optimizer,
    lr: f.num('lr', { default: 2e-4, exclusiveMin: 0 }),
    weightDecay: f.num('weight_decay', { default: 0, min: 0 }),
    momentum,
    betas: (betas as [number, number] | undefined) ?? [0.9, 0.999],
    eps: f.num('eps', { default: 1e-8, exclusiveMin: 0 }),
    batchSize,
    microBatchSize,
    numEpochs: f.num('num_epochs', { default: 1, exclusiveMin: 0 }),
    maxSteps: f.optInt('max_steps', { min: 1 }),
    scheduler: f.str<SchedulerName>('scheduler', {
      default: 'constant',
      oneOf: ['constant', 'linear', 'cosine'] as const,
    }),
    warmupSteps,
    warmupRatio,
    maxGradNorm: f.optNum('max_grad_norm', { exclusiveMin: 0 }),
    ...(earlyStopping ? { earlyStopping } : {}),
    ...(f.bool('packing', false) ? { packing: true as const } : {}),
  };
  f.rejectUnknown();
  for (const d of entry.data) if (!fs.existsSync(d)) f.fail('data', `names ${d}, which does not exist`);
  if (entry.initFrom && !fs.existsSync(entry.initFrom))
    f.fail('init_from', `names ${entry.initFrom}, which does not exist`);
  return entry;
}

export function parseTrainConfig(cf: ConfigFile): TrainConfig {
  const at = (key: string) => cf.locate([key]);
  const f = Fields.of(cf.value, cf.file, at);
  const dtype = f.str('dtype', { default: 'float32' });
  if (!isDType(dtype) || !['float32', 'bfloat16', 'float16'].includes(dtype))
    f.fail('dtype', `'${dtype}' is not float32, bfloat16 or float16`);
  // A path (relative to the config) when it exists, else a Hugging Face model id resolved at load time.
  const givenModel = f.str('base_model');
  const localModel = resolvePath(cf, givenModel);
  const baseModel = !fs.existsSync(localModel) && isModelId(givenModel) ? givenModel : localModel;
  const rawAdapters = f.raw('adapters');
  if (!Array.isArray(rawAdapters) || rawAdapters.length === 0) f.fail('adapters', 'must be a non-empty list');
  const tokenizer = f.optStr('tokenizer');
  const quantize = f.optStr('quantize');
  const bf16Compute = f.optStr('bf16_compute');
  if (bf16Compute !== null && !isBf16Compute(bf16Compute))
    f.fail('bf16_compute', `'${bf16Compute}' is not ${BF16_COMPUTE.join(', ')}`);
  const evalCfg = f.has('eval') ? parseEvalBlock(cf, f.raw('eval')) : null;
  const shared: Shared = {
    eval: evalCfg,
    earlyStopping: f.has('early_stopping')
      ? parseEarlyStopping(cf, f.raw('early_stopping'), ['early_stopping'], evalCfg)
      : (f.raw('early_stopping'), null),
  };
  if (quantize !== null && !isQuantFormat(quantize))
    f.fail('quantize', `'${quantize}' is not a quantisation format (${QUANT_FORMATS.join(', ')})`);
  const cfg: TrainConfig = {
    file: cf.file,
    baseModel,
    tokenizer: tokenizer ? resolvePath(cf, tokenizer) : null,
    outputDir: resolvePath(cf, f.str('output_dir')),
    seed: f.int('seed', { default: 42, min: 0 }),
    cutoffLen: f.int('cutoff_len', { default: 512, min: 2 }),
    saveSteps: f.int('save_steps', { default: 0, min: 0 }),
    saveTotalLimit: f.optInt('save_total_limit', { min: 1 }),
    dtype: dtype as DType,
    ...(bf16Compute !== null && bf16Compute !== 'auto' ? { bf16Compute: bf16Compute as Bf16Compute } : {}),
    device: f.str('device', { default: 'cpu' }),
    ...(quantize ? { quantize: quantize as QuantFormat } : {}),
    recompute: f.bool('recompute', false),
    ...(f.bool('optimizer_in_backward', false) ? { optimizerInBackward: true as const } : {}),
    ...(f.bool('shard_base', false) ? { shardBase: true as const } : {}),
    ...(f.bool('shard_optimizer', false) ? { shardOptimizer: true as const } : {}),
    groupByLength: f.bool('group_by_length', true),
    saveFormats: parseSaveFormats(f),
    reportTo: parseReportTo(f),
    eval: evalCfg,
    adapters: (rawAdapters as unknown[]).map((a, i) => adapterEntry(cf, a, i, shared)),
  };
  f.rejectUnknown();
  if (cfg.optimizerInBackward) {
    // The step needs each layer's gradients complete and final: one backward per step, nothing to clip.
    if (!cfg.recompute)
      f.fail('optimizer_in_backward', "needs recompute: true (the step runs after each layer's recomputed backward)");
    for (const a of cfg.adapters) {
      if (a.microBatchSize < a.batchSize)
        f.fail(
          'optimizer_in_backward',
          `needs one micro-batch per step: adapter '${a.name}' has micro_batch_size ${a.microBatchSize} < batch_size ${a.batchSize}`,
        );
      if (a.maxGradNorm !== null)
        f.fail('optimizer_in_backward', `cannot clip gradients: adapter '${a.name}' sets max_grad_norm`);
    }
  }
  if (cfg.shardBase) {
    if (!cfg.recompute)
      f.fail(
        'shard_base',
        'needs recompute: true (without it the backward keeps every gathered layer, which is the whole base)',
      );
    if (cfg.device !== 'cpu')
      f.fail('shard_base', `needs device: cpu for now (the gathers run over Gloo), not ${cfg.device}`);
  }
  if (!fs.existsSync(cfg.baseModel) && !isModelId(cfg.baseModel))
    f.fail('base_model', `names ${cfg.baseModel}, which does not exist (nor is it a Hugging Face model id org/name)`);
  const names = cfg.adapters.map((a) => a.name);
  // Case-insensitively: 'Lora' and 'lora' are one folder on macOS and Windows.
  const lower = names.map((n) => n.toLowerCase());
  const dup = names.find((_, i) => lower.indexOf(lower[i]!) !== i);
  if (dup) throw new UserError(`${cf.file}: two adapters are named '${dup}' (names must differ, ignoring case)`);
  return cfg;
}

export function readTrainConfig(file: string): TrainConfig {
  return parseTrainConfig(readConfigFile(file));
}
