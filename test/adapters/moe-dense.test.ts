// The dense expert path (moe-dense.ts: inference on a few tokens) equals the per-expert path, for every
// routing strategy, with DoRA experts and with padding.
import { test } from 'node:test';
import { assertClose } from '../helpers/assert.js';
import { SMALL_MOE, SMALL_MOE_ROUTINGS } from '../helpers/test-adapters.js';
import { referenceDir } from '../helpers/fixtures.js';
import { openModel } from '../helpers/reference-adapters.js';
import * as T from '../../src/tensor/index.js';
import { Adapter } from '../../src/adapters/adapter.js';
import { AdapterBatch } from '../../src/adapters/batch.js';
import { parseAdapterConfig } from '../../src/adapters/config.js';

const configs: Record<string, Record<string, unknown>> = {
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
  test(`dense experts equal the per-expert path at inference: ${name}`, () =>
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
      const run = (efficient: boolean) =>
        T.noGrad(() => {
          const hooks = AdapterBatch.all(a, { training: false, efficient, record: 'none' });
          const out = model.forward(ids, { hooks, attentionMask: mask });
          hooks.dispose();
          return out;
        });
      assertClose(run(true), run(false), { atol: 1e-5, what: name });
      a.dispose();
      model.dispose();
    }));
}
