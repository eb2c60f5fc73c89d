// Fused training steps of a MixLoRA and a DoRA adapter (each with AdamW) on synthetic token ids, for the
// tests that count the tensors a step leaves behind (a plain and a quantised base).
import assert from 'node:assert/strict';
import * as T from '../../src/tensor/index.js';
import type { CausalLM } from '../../src/models/causal-lm.js';
import { Adapter } from '../../src/adapters/adapter.js';
import { parseAdapterConfig } from '../../src/adapters/config.js';
import { fusedStep } from '../../src/train/step.js';
import { AdamW } from '../../src/optim/index.js';
import { mixloraAdapter } from './train.js';

export interface StepCase {
  /** Keys beside mixloraAdapter()'s (dropout, jitter). */
  mixlora: Record<string, unknown>;
  /** Each adapter's micro-batch: its example count and the first example's length (each next one a token longer). */
  mixExamples: [n: number, len: number];
  doraExamples: [n: number, len: number];
  /** Positions at the start of every example left unscored (label -100). */
  unscoredPrefix: number;
  /** The step's scored-token count each adapter's loss is divided by. */
  stepTokens: number;
  /** Both micro-batches packed into rows of this many tokens (packing: true); absent: padded. */
  packTo?: number;
}

/** Asserts that, after a plain and a recomputing step, `rounds` more of each pair leave the live tensor
 * count unchanged; frees the adapters and their optimizers (not the model). */
export function assertFusedStepsLeaveNoTensor(model: CausalLM, c: StepCase, rounds: number): void {
  const mix = Adapter.create('mix', parseAdapterConfig(mixloraAdapter(c.mixlora), 'm'), model).requiresGrad_();
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
  const ex = ([n, len]: [number, number]) =>
    Array.from({ length: n }, (_, i) => {
      const ids = Array.from({ length: len + i }, (_, j) => 3 + ((j * 7 + i * 13) % 500));
      return { inputIds: ids, labels: ids.map((t, j) => (j < c.unscoredPrefix ? -100 : t)) };
    });
  const pack = c.packTo !== undefined ? { packTo: c.packTo } : {};
  const step = (recompute: boolean) => {
    fusedStep(
      model,
      [
        { adapter: mix, examples: ex(c.mixExamples), stepTokens: c.stepTokens, microBatchesPerStep: 1, ...pack },
        { adapter: dora, examples: ex(c.doraExamples), stepTokens: c.stepTokens, microBatchesPerStep: 1, ...pack },
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
  for (let i = 0; i < rounds; i++) {
    step(false);
    step(true);
  }
  assert.equal(T.liveTensors(), before);
  opts.forEach((o) => o.dispose());
  mix.dispose();
  dora.dispose();
}
