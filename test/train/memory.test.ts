// A training step leaves no tensor behind: plain and recomputing passes, MixLoRA and DoRA, padding, packing.
import { test } from 'node:test';
import { STORIES_BIN, STORIES_TOK } from '../helpers/fixtures.js';
import { assertFusedStepsLeaveNoTensor } from '../helpers/fused-steps.js';
import { loadModel } from '../../src/models/load.js';

test('fused training steps leave the live tensor count unchanged', () => {
  const { model } = loadModel(STORIES_BIN, { tokenizer: STORIES_TOK });
  assertFusedStepsLeaveNoTensor(
    model,
    {
      mixlora: { lora_dropout: 0.1, jitter_noise: 0.01 },
      mixExamples: [3, 20],
      doraExamples: [2, 30],
      unscoredPrefix: 3,
      stepTokens: 60,
    },
    3,
  );
  // Packed rows (several examples a row: segment masks, positions, switch-capacity positions).
  assertFusedStepsLeaveNoTensor(
    model,
    {
      mixlora: { routing_strategy: 'mixlora-switch', top_k: 1, expert_capacity: 4 },
      mixExamples: [5, 10],
      doraExamples: [3, 12],
      unscoredPrefix: 3,
      stepTokens: 60,
      packTo: 40,
    },
    3,
  );
  model.dispose();
});
