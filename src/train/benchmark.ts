// The training-step benchmark behind `mixlora bench`: a LLaMA-shaped model with random weights and N
// adapters of one method trained fused, AdamW, batch 4 × 256 tokens per adapter; the median step time
// after a warm-up, and the process's peak resident memory.
import * as T from '../tensor/index.js';
import { llamaConfig, randomModel } from '../models/random.js';
import { Adapter } from '../adapters/adapter.js';
import { parseAdapterConfig } from '../adapters/config.js';
import { AdamW } from '../optim/adamw.js';
import { fusedStep, type MicroBatch } from './step.js';
import type { Example } from '../data/examples.js';

export const METHODS = ['lora', 'dora', 'mixlora', 'mixdora'] as const;
export type BenchMethod = (typeof METHODS)[number];

export const PRESETS = {
  'llama-58m': { vocab: 32000, hidden: 512, intermediate: 1376, layers: 8, heads: 8, kvHeads: 8, batch: 4, seq: 256 },
} as const;
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
      return {
        ...base,
        peft_type: 'MIXLORA',
        r: 16,
        lora_alpha: 32,
        routing_strategy: 'mixlora',
        num_experts: 8,
        top_k: 2,
        router_aux_loss_coef: 0.01,
        use_dora: true,
      };
  }
}

export interface BenchResult {
  method: BenchMethod;
  fused: number;
  ms_per_step: number;
  ms_per_token: number;
  tokens_per_s: number;
  peak_rss_mib: number;
  trainable_parameters: number;
  recompute: boolean;
  scored: number | null;
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
  onStep?: (i: number) => void;
}): BenchResult {
  const p = PRESETS[o.preset];
  const model = randomModel(llamaConfig(p), { seed: 0, device: o.device });
  const adapters: Adapter[] = [];
  const optimizers: AdamW[] = [];
  const micro: MicroBatch[] = [];
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
    optimizers.push(
      new AdamW(
        a.parameters().map((q) => q.tensor),
        { lr: 1e-4, weightDecay: 0 },
      ),
    );
    T.manualSeed(200 + i);
    const ids = T.tidy(() => T.randint(0, p.vocab, [p.batch, p.seq]).toList() as number[][]);
    const scored = o.scored ?? null;
    const examples: Example[] = ids.map((row) => ({
      inputIds: row,
      labels: scored === null ? row : row.map((t, j) => (j >= p.seq - scored ? t : -100)),
    }));
    micro.push({
      adapter: a,
      examples,
      stepTokens: p.batch * (scored === null ? p.seq - 1 : scored),
      microsPerStep: 1,
    });
  }
  const step = () => {
    fusedStep(model, micro, { recompute: o.recompute, padId: 0 });
    for (const opt of optimizers) {
      opt.step();
      opt.zeroGrad();
    }
    if (o.device !== 'cpu') T.cuda.synchronize();
  };
  const times: number[] = [];
  for (let i = 0; i < o.warmup + o.steps; i++) {
    const t0 = process.hrtime.bigint();
    step();
    if (i >= o.warmup) times.push(Number(process.hrtime.bigint() - t0) / 1e6);
    o.onStep?.(i + 1);
  }
  times.sort((a, b) => a - b);
  const ms = times[Math.floor(times.length / 2)]!;
  const tokens = o.fused * p.batch * p.seq;
  const result: BenchResult = {
    method: o.method,
    fused: o.fused,
    ms_per_step: ms,
    ms_per_token: ms / tokens,
    tokens_per_s: tokens / (ms / 1000),
    peak_rss_mib: process.resourceUsage().maxRSS / 1024,
    trainable_parameters: adapters.reduce((n, a) => n + a.parameterCount(), 0),
    recompute: o.recompute,
    scored: o.scored ?? null,
  };
  for (const opt of optimizers) opt.dispose();
  for (const a of adapters) a.dispose();
  model.dispose();
  return result;
}
