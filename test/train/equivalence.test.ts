// Training equivalences: adapters trained fused end where each ends alone; gradient accumulation over
// micro-batches of 1 equals one micro-batch; recomputing activations per layer changes nothing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { tempDir } from '../helpers/fixtures.js';
import {
  DORA_ADAPTER,
  LORA_ADAPTER,
  adapterTensors,
  commonsenseSlice,
  maxDiff,
  mixloraAdapter,
  trainConfig,
} from '../helpers/train.js';
import { train } from '../../src/train/trainer.js';

const mixlora = (extra: Record<string, unknown> = {}) => mixloraAdapter({ router_aux_loss_coef: 0.01, ...extra });

async function run(config: Record<string, unknown>): Promise<string> {
  const cfg = trainConfig(config);
  await train(cfg);
  return cfg.outputDir;
}

// Rows of different adapters never mix (a test in test/adapters checks gradients exactly), but the
// shared frozen matmuls see more rows and longer padding when fused, and BLAS then associates float32
// sums differently: results agree to rounding. AdamW turns rounding noise in near-zero gradients into
// visible steps (a few 1e-5 after three steps at lr 2e-3), so these comparisons use SGD, whose steps
// stay proportional to the gradients.
function tokenData(rows: number, len: number, seed: number): string {
  const file = path.join(tempDir(), `tokens-${seed}.jsonl`);
  const lines = Array.from({ length: rows }, (_, r) =>
    JSON.stringify({ input_ids: Array.from({ length: len }, (_, j) => 3 + ((j * 31 + r * 17 + seed * 7) % 500)) }),
  );
  fs.writeFileSync(file, lines.join('\n') + '\n');
  return file;
}

/** Trains the entries fused, then each alone, and compares every adapter's weights (≤ 1e-6). */
async function assertFusedEqualsAlone(entries: { name: string }[], cutoffLen: number): Promise<void> {
  const fused = await run({ cutoff_len: cutoffLen, adapters: entries });
  for (const e of entries) {
    const alone = await run({ cutoff_len: cutoffLen, adapters: [e] });
    const d = maxDiff(adapterTensors(path.join(fused, e.name)), adapterTensors(path.join(alone, e.name)));
    assert.ok(d <= 1e-6, `${e.name}: fused and alone differ by ${d}`);
  }
}

test('adapters trained fused end with the weights each gets trained alone (equal-length data, SGD: ≤ 1e-6)', async () => {
  const entries = [
    {
      name: 'mix',
      adapter: mixlora(),
      data: tokenData(16, 24, 1),
      optimizer: 'sgd',
      lr: 0.05,
      batch_size: 8,
      micro_batch_size: 4,
      num_epochs: 1,
    },
    {
      name: 'lora',
      adapter: LORA_ADAPTER,
      data: tokenData(12, 24, 2),
      optimizer: 'sgd',
      momentum: 0.9,
      weight_decay: 0.01,
      lr: 0.02,
      batch_size: 4,
      micro_batch_size: 4,
      num_epochs: 1,
    },
    {
      name: 'dora',
      adapter: DORA_ADAPTER,
      data: tokenData(12, 24, 3),
      optimizer: 'sgd',
      lr: 0.05,
      batch_size: 6,
      micro_batch_size: 3,
      max_steps: 2,
      scheduler: 'linear',
      warmup_steps: 1,
    },
  ];
  await assertFusedEqualsAlone(entries, 64);
});

test('adapters trained fused on ragged real data end with the weights of training alone (SGD: ≤ 1e-6)', async () => {
  const boolq = commonsenseSlice('boolq.train', 24);
  const arc = commonsenseSlice('arc-e.train', 16);
  const entries = [
    {
      name: 'mix',
      adapter: mixlora(),
      data: boolq,
      prompt_template: 'none',
      optimizer: 'sgd',
      lr: 0.05,
      batch_size: 8,
      micro_batch_size: 4,
      num_epochs: 1,
    },
    {
      name: 'lora',
      adapter: LORA_ADAPTER,
      data: arc,
      prompt_template: 'none',
      optimizer: 'sgd',
      momentum: 0.9,
      lr: 0.02,
      batch_size: 4,
      micro_batch_size: 4,
      num_epochs: 1,
    },
  ];
  await assertFusedEqualsAlone(entries, 512);
});

// The aux loss is per micro-batch (docs/design.md §6.4), so a MixLoRA adapter is compared with its coefficient at 0.
test('gradient accumulation: a batch of 8 as 8 micro-batches of 1 equals one micro-batch of 8 (to float rounding, SGD)', async () => {
  const data = commonsenseSlice('obqa.train', 16);
  for (const adapter of [LORA_ADAPTER, mixlora({ router_aux_loss_coef: 0 })]) {
    const base = {
      cutoff_len: 512,
      group_by_length: false,
      adapters: [
        { name: 'a', adapter, data, prompt_template: 'none', optimizer: 'sgd', lr: 0.05, batch_size: 8, max_steps: 2 },
      ],
    };
    const one = await run({ ...base, adapters: [{ ...base.adapters[0], micro_batch_size: 8 }] });
    const eight = await run({ ...base, adapters: [{ ...base.adapters[0], micro_batch_size: 1 }] });
    const d = maxDiff(adapterTensors(path.join(one, 'a')), adapterTensors(path.join(eight, 'a')));
    assert.ok(d <= 1e-6, `${adapter.peft_type}: micro 8 vs 8×1 differ by ${d}`);
  }
});

test('activation recomputation per layer trains exactly like keeping activations (dropout and jitter included)', async () => {
  const data = commonsenseSlice('boolq.train', 12);
  const adapters = [
    {
      name: 'mix',
      adapter: mixlora({ lora_dropout: 0.1, jitter_noise: 0.05 }),
      data,
      prompt_template: 'none',
      lr: 1e-3,
      batch_size: 4,
      micro_batch_size: 2,
      max_steps: 3,
    },
    {
      name: 'dora',
      adapter: { ...DORA_ADAPTER, lora_dropout: 0.1 },
      data,
      prompt_template: 'none',
      lr: 1e-3,
      batch_size: 4,
      max_steps: 3,
    },
  ];
  const keep = await run({ cutoff_len: 512, adapters });
  const recompute = await run({ cutoff_len: 512, recompute: true, adapters });
  for (const name of ['mix', 'dora']) {
    const d = maxDiff(adapterTensors(path.join(keep, name)), adapterTensors(path.join(recompute, name)));
    assert.ok(d <= 1e-6, `${name}: recompute differs by ${d}`);
  }
});
