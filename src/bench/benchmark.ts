// The training-step benchmark behind `mixlora bench`: a LLaMA-shaped model with random weights and N
// adapters of one method trained fused, AdamW, the preset's batch per adapter; the median step time after
// a warm-up, the process's peak resident memory and, on CUDA, the caching allocator's peak bytes.
import * as T from '../tensor/index.js';
import { llamaConfig, randomModel } from '../models/random.js';
import { Adapter } from '../adapters/adapter.js';
import { parseAdapterConfig } from '../adapters/config.js';
import { AdamW } from '../optim/adamw.js';
import { AdamW8bit } from '../optim/adamw-8bit.js';
import { fusedStep, type MicroBatch } from '../train/step.js';
import { attachStepInBackward } from '../train/step-in-backward.js';
import type { Example } from '../data/examples.js';
import type { DType } from '../tensor/dtype.js';
import { ITEM_SIZE } from '../tensor/dtype.js';
import { residentBytes } from '../models/frozen-linear.js';
import { computeMode, describeCompute, type Bf16Compute } from '../tensor/compute-mode.js';
import type { QuantFormat } from '../quant/format.js';
import { UserError } from '../util/errors.js';
import { type AdapterFlopShape, adapterFlopsPerToken, matmulWeights, trainFlopsPerToken } from './flops.js';
import { profileStep, type StepProfile } from './step-profile.js';
import os from 'node:os';
import { SOLO, type Group } from '../distributed/group.js';
import { allReduceStep } from '../train/data-parallel.js';
import { ShardedOptimizer } from '../train/sharded-optimizer.js';
import type { Optimizer } from '../optim/optimizer.js';

export const METHODS = ['lora', 'dora', 'mixlora', 'mixdora'] as const;
export type BenchMethod = (typeof METHODS)[number];

export interface Preset {
  vocab: number;
  hidden: number;
  intermediate: number;
  layers: number;
  heads: number;
  kvHeads: number;
  batch: number;
  seq: number;
  dtype: DType;
}

export const PRESETS: Record<
  'llama-58m' | 'llama-1b' | 'llama2-7b' | 'llama2-13b' | 'llama2-70b' | 'llama-tiny',
  Preset
> = {
  'llama-58m': {
    vocab: 32000,
    hidden: 512,
    intermediate: 1376,
    layers: 8,
    heads: 8,
    kvHeads: 8,
    batch: 4,
    seq: 256,
    dtype: 'float32',
  },
  // TinyLlama-1.1B's shapes (its config.json: grouped-query attention, 4 KV heads) with short rows, so the
  // frozen base weights dominate memory as they do for the paper's 7B model on long batches.
  'llama-1b': {
    vocab: 32000,
    hidden: 2048,
    intermediate: 5632,
    layers: 22,
    heads: 32,
    kvHeads: 4,
    batch: 2,
    seq: 64,
    dtype: 'bfloat16',
  },
  // LLaMA-2-7B's shapes (Touvron et al. 2023, table 1 / its config.json), the paper's Table 5 model.
  'llama2-7b': {
    vocab: 32000,
    hidden: 4096,
    intermediate: 11008,
    layers: 32,
    heads: 32,
    kvHeads: 32,
    batch: 4,
    seq: 512,
    dtype: 'bfloat16',
  },
  // LLaMA-2-13B's and LLaMA-2-70B's shapes (their config.json files; 70B: grouped-query attention, 8 KV heads):
  // for `bench --shard-base --plan` and GPUs.
  'llama2-13b': {
    vocab: 32000,
    hidden: 5120,
    intermediate: 13824,
    layers: 40,
    heads: 40,
    kvHeads: 40,
    batch: 4,
    seq: 512,
    dtype: 'bfloat16',
  },
  'llama2-70b': {
    vocab: 32000,
    hidden: 8192,
    intermediate: 28672,
    layers: 80,
    heads: 64,
    kvHeads: 8,
    batch: 4,
    seq: 512,
    dtype: 'bfloat16',
  },
  // A CPU-sized stand-in with llama2-7b's dtype, for the CPU mode of scripts/gpu-check.sh.
  'llama-tiny': {
    vocab: 2048,
    hidden: 128,
    intermediate: 344,
    layers: 2,
    heads: 4,
    kvHeads: 4,
    batch: 2,
    seq: 64,
    dtype: 'bfloat16',
  },
};
export type PresetName = keyof typeof PRESETS;

const TARGETS = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];

/** The paper's settings: LoRA/DoRA r 80 (the same parameter budget as MixLoRA r 16 × 8 experts). */
export function methodConfig(method: BenchMethod): Record<string, unknown> {
  const base = { lora_dropout: 0, target_modules: TARGETS };
  switch (method) {
    case 'lora':
      return { ...base, peft_type: 'LORA', r: 80, lora_alpha: 160 };
    case 'dora':
      return { ...base, peft_type: 'LORA', r: 80, lora_alpha: 160, use_dora: true };
    case 'mixlora':
      return {
        ...base,
        peft_type: 'MIXLORA',
        r: 16,
        lora_alpha: 32,
        routing_strategy: 'mixlora',
        num_experts: 8,
        top_k: 2,
        router_aux_loss_coef: 0.01,
      };
    case 'mixdora':
      return { ...methodConfig('mixlora'), use_dora: true };
  }
}

/** The FLOP-relevant shape of methodConfig(method). */
export function methodFlopShape(method: BenchMethod): AdapterFlopShape {
  const c = methodConfig(method) as { r: number; target_modules: string[]; num_experts?: number; top_k?: number };
  return {
    r: c.r,
    targets: c.target_modules,
    ...(c.num_experts ? { experts: { count: c.num_experts, topK: c.top_k! } } : {}),
  };
}

export type BenchOptimizer = 'adamw' | 'adamw8bit';

export interface BenchResult {
  method: BenchMethod;
  fused: number;
  optimizer: BenchOptimizer;
  optimizer_in_backward: boolean;
  ms_per_step: number;
  ms_per_token: number;
  tokens_per_s: number;
  peak_rss_mib: number;
  trainable_parameters: number;
  recompute: boolean;
  scored: number | null;
  preset: PresetName;
  batch: number;
  seq: number;
  dtype: DType;
  /** The dtype the base computes in (a bfloat16 base may compute in float32: tensor/compute-mode.ts), and why. */
  compute_dtype: DType;
  compute_reason: string;
  device: T.Device;
  /** The base's projections quantised (--quantize), or null. */
  quantize: QuantFormat | null;
  /** Bytes held by the frozen base's tensors (quantised codes and scales counted as such), in MiB; with
   * shard_base, this rank's shares. */
  base_mib: number;
  /** Whether the frozen base was sharded across the ranks (shard_base). */
  shard_base: boolean;
  /** Whether each rank kept the optimizer state of its share of the parameters only (shard_optimizer). */
  shard_optimizer: boolean;
  /** The process's resident memory just after the base was built, before adapters and steps (MiB). */
  rss_after_base_mib: number;
  /** Model FLOPs per trained token (src/bench/flops.ts) and the rate they were done at. */
  model_flops_per_token: number;
  model_tflops: number;
  /** The adapters' own FLOPs per token (src/bench/flops.ts), and the rate of model + adapter FLOPs. */
  adapter_flops_per_token: number;
  total_tflops: number;
  /** The CUDA caching allocator's peaks over the run (MiB), null on CPU or with an addon lacking the counters. */
  peak_cuda_allocated_mib: number | null;
  peak_cuda_reserved_mib: number | null;
  /** Processes of the data-parallel job (`mixlora launch ... bench`), each running this batch. */
  ranks: number;
  /** Median time per step spent summing the adapters' gradients across ranks (null alone). */
  collective_ms_per_step: number | null;
  /** What summed them: 'nccl' or 'gloo' (src/distributed/backend.ts), null alone. */
  collective_backend: 'nccl' | 'gloo' | null;
  /** With `profile`: one more step's time by op family. */
  profile?: StepProfile;
}

function cudaIndex(device: T.Device): number {
  return device === 'cuda' || device === 'cpu' ? 0 : Number(device.slice(5));
}

/** `scored`: answer tokens per row (the rest is prompt, labelled -100), or null for every token. */
export function runTrainBench(o: {
  preset: PresetName;
  method: BenchMethod;
  fused: number;
  steps: number;
  warmup: number;
  recompute: boolean;
  device: T.Device;
  scored?: number | null;
  /** Rows per adapter, tokens per row and the base model's dtype, instead of the preset's. */
  batch?: number;
  seq?: number;
  dtype?: DType;
  /** How a bfloat16 base computes (default: MIXLORA_BF16_COMPUTE, else auto). */
  bf16Compute?: Bf16Compute;
  quantize?: QuantFormat | null;
  /** Each adapter's optimizer (default adamw; adamw8bit keeps 8-bit blockwise moments). */
  optimizer?: BenchOptimizer;
  /** The optimizer step layer by layer inside the recomputed backward (needs recompute; src/train/step-in-backward.ts). */
  optimizerInBackward?: boolean;
  onStep?: (i: number) => void;
  /** After the timed steps, one more step recorded op by op (its breakdown in `profile`). */
  profile?: boolean;
  /** The job's group: each step then sums every adapter's gradients across ranks, as training does. */
  group?: Group;
  /** shard_base: each rank keeps 1/W of the frozen base, each unit gathered around its use (needs recompute). */
  shardBase?: boolean;
  /** shard_optimizer: each rank keeps the AdamW state of its share of the parameters (ZeRO stage 1). */
  shardOptimizer?: boolean;
}): BenchResult {
  const group = o.group ?? SOLO;
  const p = {
    ...PRESETS[o.preset],
    ...(o.batch ? { batch: o.batch } : {}),
    ...(o.seq ? { seq: o.seq } : {}),
    ...(o.dtype ? { dtype: o.dtype } : {}),
  };
  const quantize = o.quantize ?? null;
  const onCuda = o.device !== 'cpu';
  // Checked before allocating: llama2-7b's weights alone are 12.6 GiB in bfloat16. Quantised projections
  // take 1 byte (int8) or 0.5625 bytes (nf4: 4 bits and a float32 absmax per 64) per weight.
  const projBytes = quantize ? (quantize === 'int8' ? 1 : 0.5625) : ITEM_SIZE[p.dtype];
  const lmHead = p.hidden * p.vocab;
  const weightBytes = (matmulWeights(p) - lmHead) * projBytes + 2 * lmHead * ITEM_SIZE[p.dtype];
  if (!onCuda && weightBytes / (o.shardBase ? group.worldSize : 1) > os.totalmem() / 2) {
    const gib = (b: number) => (b / 2 ** 30).toFixed(1);
    throw new UserError(
      `bench --preset ${o.preset}: its weights alone take ${gib(weightBytes)} GiB, more than half of this machine's ` +
        `${gib(os.totalmem())} GiB; use --device cuda or a smaller preset (llama-58m, llama-tiny)`,
    );
  }
  if (onCuda) T.cuda.resetPeakStats(cudaIndex(o.device));
  const compute = computeMode(p.dtype, o.device, o.bf16Compute);
  const model = randomModel(llamaConfig(p), {
    seed: 0,
    device: o.device,
    dtype: p.dtype,
    computeDType: compute.compute,
    quantize,
    shard: o.shardBase ? group : null,
  });
  const rssAfterBase = process.memoryUsage.rss() / 2 ** 20;
  const adapters: Adapter[] = [];
  const optimizers: Optimizer[] = [];
  const microBatches: MicroBatch[] = [];
  for (let i = 0; i < o.fused; i++) {
    T.manualSeed(100 + i);
    const a = Adapter.create(
      `${o.method}-${i}`,
      parseAdapterConfig(methodConfig(o.method), o.method),
      model,
    ).requiresGrad_();
    // Nonzero B, as after some training (B = 0 would make some gradients trivially zero).
    T.noGrad(() => {
      for (const q of a.parameters()) if (q.name.includes('lora_B')) q.tensor.normal_(0, 0.01);
    });
    adapters.push(a);
    const makeOptimizer = (own: T.Tensor[]) =>
      new (o.optimizer === 'adamw8bit' ? AdamW8bit : AdamW)(own, { lr: 1e-4, weightDecay: 0 });
    const params = a.parameters().map((q) => q.tensor);
    optimizers.push(
      o.shardOptimizer && group.worldSize > 1
        ? new ShardedOptimizer(params, group, makeOptimizer)
        : makeOptimizer(params),
    );
    T.manualSeed(200 + i);
    const ids = T.tidy(() => T.randint(0, p.vocab, [p.batch, p.seq]).toList() as number[][]);
    const scored = o.scored ?? null;
    const examples: Example[] = ids.map((row) => ({
      inputIds: row,
      labels: scored === null ? row : row.map((t, j) => (j >= p.seq - scored ? t : -100)),
    }));
    microBatches.push({
      adapter: a,
      examples,
      stepTokens: p.batch * (scored === null ? p.seq - 1 : scored),
      microBatchesPerStep: 1,
    });
  }
  const passes = () => {
    if (o.optimizerInBackward) microBatches.forEach((m, i) => attachStepInBackward(adapters[i]!, optimizers[i]!, m));
    fusedStep(model, microBatches, { recompute: o.recompute, padId: 0 });
    if (onCuda) T.cuda.synchronize(cudaIndex(o.device));
  };
  // Under a launcher: the gradient sums across ranks that training does before each optimizer step.
  const collectiveMs: number[] = [];
  const sumAcrossRanks = () => {
    const totals = { ce: 0, aux: 0, auxCount: 0, scored: 0, input: 0, seconds: 0 };
    for (const a of adapters)
      allReduceStep(
        group,
        a.parameters().map((q) => q.tensor),
        totals,
      );
  };
  const optimizerStep = () => {
    for (const opt of optimizers) {
      if (!o.optimizerInBackward) opt.step();
      opt.zeroGrad();
    }
    if (onCuda) T.cuda.synchronize(cudaIndex(o.device));
  };
  // Time in collectives: the gradient sums, and with shard_base each unit's all-gathers.
  const step = () => {
    const inCollectives = group.collectiveSeconds;
    passes();
    sumAcrossRanks();
    optimizerStep();
    collectiveMs.push((group.collectiveSeconds - inCollectives) * 1000);
  };
  const times: number[] = [];
  for (let i = 0; i < o.warmup + o.steps; i++) {
    const t0 = process.hrtime.bigint();
    step();
    if (i >= o.warmup) times.push(Number(process.hrtime.bigint() - t0) / 1e6);
    o.onStep?.(i + 1);
  }
  const ms = median(times);
  const tokens = o.fused * p.batch * p.seq;
  const mem = onCuda ? T.cuda.memoryStats(cudaIndex(o.device)) : null;
  const flops = trainFlopsPerToken(p, p.seq);
  const adapterFlops = adapterFlopsPerToken(p, methodFlopShape(o.method));
  const result: BenchResult = {
    method: o.method,
    fused: o.fused,
    optimizer: o.optimizer ?? 'adamw',
    optimizer_in_backward: o.optimizerInBackward ?? false,
    ms_per_step: ms,
    ms_per_token: ms / tokens,
    tokens_per_s: tokens / (ms / 1000),
    peak_rss_mib: process.resourceUsage().maxRSS / 1024,
    trainable_parameters: adapters.reduce((n, a) => n + a.parameterCount(), 0),
    recompute: o.recompute,
    scored: o.scored ?? null,
    preset: o.preset,
    batch: p.batch,
    seq: p.seq,
    dtype: p.dtype,
    compute_dtype: compute.compute,
    compute_reason: describeCompute(compute),
    device: o.device,
    quantize,
    base_mib: (model.residency?.residentBytes ?? residentBytes(model.weights)) / 2 ** 20,
    shard_base: o.shardBase ?? false,
    shard_optimizer: o.shardOptimizer ?? false,
    rss_after_base_mib: rssAfterBase,
    model_flops_per_token: flops,
    model_tflops: (flops * tokens) / (ms / 1000) / 1e12,
    adapter_flops_per_token: adapterFlops,
    total_tflops: ((flops + adapterFlops) * tokens) / (ms / 1000) / 1e12,
    peak_cuda_allocated_mib: mem ? mem.peakAllocated / 2 ** 20 : null,
    peak_cuda_reserved_mib: mem ? mem.peakReserved / 2 ** 20 : null,
    ranks: group.worldSize,
    collective_ms_per_step: group.worldSize > 1 ? median(collectiveMs.slice(o.warmup)) : null,
    collective_backend: group.backend === 'none' ? null : group.backend,
  };
  if (o.profile) result.profile = profileStep(passes, optimizerStep);
  for (const opt of optimizers) opt.dispose();
  for (const a of adapters) a.dispose();
  model.dispose();
  return result;
}

function median(xs: number[]): number {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}
