// The small adapters the CLI, scoring and serving tests build on stories260K: one LoRA on every
// projection, one DoRA on q/v, one MixLoRA with 4 experts (top-2); lora_B drawn at random so that each
// adapter changes the model's output.
import * as T from '../../src/tensor/index.js';
import type { CausalLM } from '../../src/models/causal-lm.js';
import { Adapter } from '../../src/adapters/adapter.js';
import { parseAdapterConfig } from '../../src/adapters/config.js';

export const ALL_PROJECTIONS = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];

export const TEST_ADAPTER_CONFIGS = {
  lora: { peft_type: 'LORA', r: 8, lora_alpha: 16, target_modules: ALL_PROJECTIONS },
  dora: { peft_type: 'LORA', r: 8, lora_alpha: 16, target_modules: ['q_proj', 'v_proj'], use_dora: true },
  mixlora: {
    peft_type: 'MIXLORA',
    r: 4,
    lora_alpha: 8,
    target_modules: ALL_PROJECTIONS,
    routing_strategy: 'mixlora',
    num_experts: 4,
    top_k: 2,
  },
} satisfies Record<string, Record<string, unknown>>;

/** A tiny MixLoRA (r 2, 4 experts, no dropout) to spread into the routing cases below. */
export const SMALL_MOE = { peft_type: 'MIXLORA', lora_dropout: 0, r: 2, lora_alpha: 4, num_experts: 4 };

/** The routing strategies other than top-k on partial targets, as the path-equality tests use them. */
export const SMALL_MOE_ROUTINGS = {
  'top-p, up only': { ...SMALL_MOE, target_modules: ['up_proj'], routing_strategy: 'mixlora-dynamic', top_p: 0.6 },
  switch: {
    ...SMALL_MOE,
    target_modules: ['gate_proj', 'down_proj'],
    routing_strategy: 'mixlora-switch',
    expert_capacity: 2,
    jitter_noise: 0,
  },
} satisfies Record<string, Record<string, unknown>>;

/** An adapter of `cfg` (without dropout) created after manualSeed(seed), its lora_B ~ N(0, std²). */
export function randomAdapter(
  name: string,
  cfg: Record<string, unknown>,
  model: CausalLM,
  opts: { seed: number; std: number },
): Adapter {
  T.manualSeed(opts.seed);
  const a = Adapter.create(name, parseAdapterConfig({ lora_dropout: 0, ...cfg }, name), model);
  T.noGrad(() => {
    for (const p of a.parameters()) if (p.name.includes('lora_B')) p.tensor.normal_(0, opts.std);
  });
  return a;
}
