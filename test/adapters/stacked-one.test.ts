// One adapter's decode steps run stacked (stacked-forward.ts, as the serving engine runs them: AdapterBatch
// with a stack cache, at most STACKED_MAX_TOKENS tokens) and equal the per-expert path range by range, for
// plain LoRA and DoRA, for every routing strategy, with DoRA experts (frozen or not) and with padding.
// Tolerance: 1e-5 absolute on the logits (float32; the two sum in other orders).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { assertClose } from '../helpers/assert.js';
import { SMALL_MOE, SMALL_MOE_ROUTINGS } from '../helpers/test-adapters.js';
import { referenceDir } from '../helpers/fixtures.js';
import { openModel } from '../helpers/reference-adapters.js';
import * as T from '../../src/tensor/index.js';
import { Adapter } from '../../src/adapters/adapter.js';
import { AdapterBatch, STACKED_MAX_TOKENS } from '../../src/adapters/batch.js';
import { AdapterStackCache } from '../../src/adapters/adapter-stack.js';
import { parseAdapterConfig } from '../../src/adapters/config.js';

const configs: Record<string, Record<string, unknown>> = {
  LoRA: { peft_type: 'LORA', r: 4, lora_alpha: 8, target_modules: ['q_proj', 'v_proj', 'gate_proj', 'down_proj'] },
  'DoRA, frozen': {
    peft_type: 'LORA',
    r: 4,
    lora_alpha: 8,
    use_dora: true,
    target_modules: ['q_proj', 'o_proj', 'up_proj', 'down_proj'],
  },
  'top-k DoRA, not frozen': {
    ...SMALL_MOE,
    target_modules: ['gate_proj', 'up_proj', 'down_proj'],
    routing_strategy: 'mixlora',
    top_k: 2,
    use_dora: true,
  },
  'top-k, every target': {
    ...SMALL_MOE,
    target_modules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'],
    routing_strategy: 'mixlora',
    top_k: 2,
  },
  'top-k DoRA, frozen': {
    ...SMALL_MOE,
    target_modules: ['gate_proj', 'up_proj', 'down_proj'],
    routing_strategy: 'mixlora',
    top_k: 2,
    use_dora: true,
  },
  'top-k DoRA, frozen, down only': {
    ...SMALL_MOE,
    target_modules: ['down_proj'],
    routing_strategy: 'mixlora',
    top_k: 3,
    use_dora: true,
  },
  ...SMALL_MOE_ROUTINGS,
};

for (const [name, cfg] of Object.entries(configs)) {
  test(`one adapter stacked equals range by range at inference: ${name}`, () =>
    T.tidy(() => {
      const model = openModel(referenceDir('adapters', 'mixlora', 'model'));
      T.manualSeed(5);
      const a = Adapter.create('m', parseAdapterConfig(cfg, 'm'), model);
      T.noGrad(() => {
        for (const p of a.parameters()) p.tensor.normal_(0, 0.3);
      });
      if (name.includes('frozen')) a.freezeForInference(model);
      const ids = T.randint(0, 53, [3, 5]); // [B, T]
      const mask = T.tensor([
        [1, 1, 1, 1, 1],
        [0, 0, 1, 1, 1],
        [0, 1, 1, 1, 1],
      ]); // [B, T] left padding
      assert.ok(ids.numel <= STACKED_MAX_TOKENS);
      const stacks = new AdapterStackCache();
      const live = T.liveTensors();
      const run = (opts: { stacks?: AdapterStackCache; efficient: boolean }) =>
        T.noGrad(() => {
          const hooks = AdapterBatch.all(a, { training: false, record: 'none', ...opts });
          const out = model.forward(ids, { hooks, attentionMask: mask });
          hooks.dispose();
          return out;
        });
      const stacked = run({ stacks, efficient: true });
      assert.ok(T.liveTensors() > live + 1, 'the stacked path ran (the cache holds the stacked modules)');
      assertClose(stacked, run({ efficient: false }), { atol: 1e-5, what: name });
      stacks.clear();
      a.dispose();
      model.dispose();
    }));
}
