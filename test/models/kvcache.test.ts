// Incremental decoding with the KV cache equals recomputing the whole sequence; left padding does not
// change a row's logits.
import { test } from 'node:test';
import { assertClose } from '../helpers/assert.js';
import * as T from '../../src/tensor/index.js';
import { KVCache } from '../../src/models/kvcache.js';
import { openReferenceModel } from '../helpers/reference-models.js';

for (const name of ['llama-gqa-llama3-tied', 'mistral-gqa-window', 'qwen2-bias-tied']) {
  test(`KV-cache decoding equals full recomputation: ${name}`, () =>
    T.noGrad(() =>
      T.tidy(() => {
        const { model, ids } = openReferenceModel(name);
        const full = model.forward(ids); // [B, T, V]
        const Tn = ids.size(1);
        const cache = new KVCache(model.config, ids.size(0), Tn, 'float32', 'cpu');
        const prefill = model.forward(ids.narrow(1, 0, 5), { cache });
        assertClose(prefill, full.narrow(1, 0, 5), { atol: 1e-5, rtol: 1e-5, what: 'prefill' });
        for (let t = 5; t < Tn; t++) {
          const step = model.forward(ids.narrow(1, t, 1), { cache });
          assertClose(step, full.narrow(1, t, 1), { atol: 1e-5, rtol: 1e-5, what: `step ${t}` });
        }
        cache.dispose();
        model.dispose();
      }),
    ));
}

test('left padding: a padded row gives the same logits as the row alone', () =>
  T.noGrad(() =>
    T.tidy(() => {
      const { model, ids } = openReferenceModel('mistral-gqa-window');
      const row = ids.select(0, 1).narrow(0, 0, 8).unsqueeze(0); // [1, 8]
      const alone = model.forward(row);
      const padded = T.cat([T.zeros([1, 4], { dtype: 'int64' }), row], 1); // [1, 12]
      const mask = T.cat([T.zeros([1, 4], { dtype: 'int64' }), T.ones([1, 8], { dtype: 'int64' })], 1);
      const out = model.forward(padded, { attentionMask: mask }).narrow(1, 4, 8);
      assertClose(out, alone, { atol: 1e-5 });
      model.dispose();
    }),
  ));
