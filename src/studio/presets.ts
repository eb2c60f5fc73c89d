// Starting points of the new-run form: the keys of a training config (docs/training-config.md), paths as
// the studio shows them (bundled/… is the package's assets folder).
import { TASKS } from '../eval/tasks.js';

/** Tasks with bundled test data (`mixlora eval --task NAME` without --data). */
export const BUNDLED_TASKS: string[] = (TASKS as readonly string[]).filter((t) => t !== 'hellaswag');

const STORIES = {
  base_model: 'bundled/models/stories260K/stories260K.bin',
  tokenizer: 'bundled/models/stories260K/tok512.bin',
};
const MIX = [
  'bundled/data/commonsense/arc-e.train.jsonl.gz',
  'bundled/data/commonsense/arc-c.train.jsonl.gz',
  'bundled/data/commonsense/boolq.train.jsonl.gz',
  'bundled/data/commonsense/obqa.train.jsonl.gz',
];
const ALL = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];

export interface Preset {
  name: string;
  description: string;
  config: Record<string, unknown>;
}

export const PRESETS: Preset[] = [
  {
    name: 'MixLoRA on stories260K (demo)',
    description: "make demo's MixLoRA: 8 experts, top-2, on the bundled commonsense mix; about a minute on 2 cores",
    config: {
      ...STORIES,
      seed: 42,
      cutoff_len: 384,
      save_steps: 20,
      adapters: [
        {
          name: 'mixlora',
          adapter: {
            peft_type: 'MIXLORA',
            r: 16,
            lora_alpha: 32,
            lora_dropout: 0.05,
            target_modules: ALL,
            routing_strategy: 'mixlora',
            num_experts: 8,
            top_k: 2,
            router_aux_loss_coef: 0.01,
          },
          data: MIX,
          prompt_template: 'none',
          lr: 2e-3,
          batch_size: 16,
          micro_batch_size: 16,
          num_epochs: 1,
          max_steps: 60,
          scheduler: 'cosine',
          warmup_ratio: 0.05,
        },
      ],
    },
  },
  {
    name: 'LoRA on stories260K (quick)',
    description: 'LoRA r 8 on the attention and MLP of stories260K, ARC-Easy; seconds',
    config: {
      ...STORIES,
      seed: 42,
      cutoff_len: 256,
      save_steps: 10,
      adapters: [
        {
          name: 'lora',
          adapter: { peft_type: 'LORA', r: 8, lora_alpha: 16, lora_dropout: 0, target_modules: ALL },
          data: ['bundled/data/commonsense/arc-e.train.jsonl.gz'],
          prompt_template: 'none',
          lr: 2e-3,
          batch_size: 8,
          num_epochs: 1,
          max_steps: 40,
          scheduler: 'constant',
        },
      ],
    },
  },
  {
    name: 'DoRA (LLaMA-style model)',
    description: 'DoRA r 16 on q/k/v/o, alpaca prompts, cosine schedule: choose your model and data',
    config: {
      base_model: '',
      seed: 42,
      cutoff_len: 512,
      save_steps: 100,
      adapters: [
        {
          name: 'dora',
          adapter: {
            peft_type: 'LORA',
            use_dora: true,
            r: 16,
            lora_alpha: 32,
            lora_dropout: 0.05,
            target_modules: ['q_proj', 'k_proj', 'v_proj', 'o_proj'],
          },
          data: [],
          prompt_template: 'alpaca',
          lr: 2e-4,
          batch_size: 16,
          micro_batch_size: 4,
          num_epochs: 2,
          scheduler: 'cosine',
          warmup_steps: 20,
          max_grad_norm: 1,
        },
      ],
    },
  },
];
