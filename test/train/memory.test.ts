// A training step leaves no tensor behind: plain and recomputing passes, MixLoRA and DoRA, padding.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { STORIES_BIN, STORIES_TOK } from '../helpers/fixtures.js';
import * as T from '../../src/tensor/index.js';
import { loadModel } from '../../src/models/load.js';
import { Adapter } from '../../src/adapters/adapter.js';
import { parseAdapterConfig } from '../../src/adapters/config.js';
import { fusedStep } from '../../src/train/step.js';
import { AdamW } from '../../src/optim/index.js';

test('fused training steps leave the live tensor count unchanged', () => {
  const { model } = loadModel(STORIES_BIN, { tokenizer: STORIES_TOK });
  const ALL = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];
  const mix = Adapter.create(
    'mix',
    parseAdapterConfig(
      {
        peft_type: 'MIXLORA',
        r: 4,
        lora_alpha: 8,
        lora_dropout: 0.1,
        target_modules: ALL,
        routing_strategy: 'mixlora',
        num_experts: 4,
        top_k: 2,
        jitter_noise: 0.01,
      },
      'm',
    ),
    model,
  ).requiresGrad_();
  const dora = Adapter.create(
    'dora',
    parseAdapterConfig(
      { peft_type: 'LORA', r: 4, lora_alpha: 8, target_modules: ['q_proj', 'down_proj'], use_dora: true },
      'd',
    ),
    model,
  ).requiresGrad_();
  const opts = [mix, dora].map(
    (a) =>
      new AdamW(
        a.parameters().map((p) => p.tensor),
        { lr: 1e-3 },
      ),
  );
  const ex = (n: number, len: number) =>
    Array.from({ length: n }, (_, i) => {
      const ids = Array.from({ length: len + i }, (_, j) => 3 + ((j * 7 + i * 13) % 500));
      return { inputIds: ids, labels: ids.map((t, j) => (j < 3 ? -100 : t)) };
    });
  const step = (recompute: boolean) => {
    fusedStep(
      model,
      [
        { adapter: mix, examples: ex(3, 20), stepTokens: 60, microBatchesPerStep: 1 },
        { adapter: dora, examples: ex(2, 30), stepTokens: 60, microBatchesPerStep: 1 },
      ],
      { recompute, padId: 0 },
    );
    for (const o of opts) {
      o.step();
      o.zeroGrad();
    }
  };
  step(false);
  step(true);
  const before = T.liveTensors();
  for (let i = 0; i < 3; i++) {
    step(false);
    step(true);
  }
  assert.equal(T.liveTensors(), before);
  opts.forEach((o) => o.dispose());
  mix.dispose();
  dora.dispose();
  model.dispose();
});
