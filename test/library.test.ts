// The package's public API, used as docs/library.md shows it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { STORIES_BIN, STORIES_TOK, tempDir } from './helpers/fixtures.js';
import {
  Adapter,
  AdapterBatch,
  generate,
  loadAdapter,
  loadModel,
  parseAdapterConfig,
  saveAdapter,
  T,
} from '../src/index.js';

test('README library example: adapters, a mixed batch, generation, tensors, saving', async () => {
  const before = T.liveTensors();
  const { model, tokenizer } = loadModel(STORIES_BIN, { tokenizer: STORIES_TOK });
  const lora = Adapter.create(
    'lora',
    parseAdapterConfig({ peft_type: 'LORA', r: 8, lora_alpha: 16, target_modules: ['q_proj', 'v_proj'] }, 'cfg'),
    model,
  );
  const dir = path.join(tempDir(), 'lora');
  saveAdapter(dir, lora);
  const adapter = await loadAdapter(dir, model);
  const prompt = tokenizer.encode('Once upon a time');
  const [ids] = generate(model, [prompt], {
    maxNewTokens: 32,
    temperature: 0,
    topK: null,
    topP: null,
    repetitionPenalty: null,
    stopIds: model.config.eosTokenIds,
    adapter,
  });
  // A fresh adapter (B = 0) does not change the model: the golden continuation.
  assert.ok(tokenizer.decodeContinuation(prompt, ids!).startsWith(', there was a little girl named Lily.'));
  const batch = new AdapterBatch(
    [
      { start: 0, count: 2, adapter },
      { start: 2, count: 2, adapter: lora },
    ],
    { training: false },
  );
  const logits = T.tidy(() =>
    T.noGrad(() =>
      model.forward(
        T.tensor(
          [
            [1, 403, 407],
            [1, 2, 3],
            [1, 403, 407],
            [1, 5, 6],
          ],
          { dtype: 'int64' },
        ),
        { hooks: batch },
      ),
    ),
  );
  assert.deepEqual(logits.shape, [4, 3, 512]);
  logits.dispose();
  const y = T.tidy(() => T.randn([4, 4]).matmul(T.eye(4)).sum());
  assert.equal(y.ndim, 0);
  y.dispose();
  batch.dispose();
  adapter.dispose();
  lora.dispose();
  model.dispose();
  assert.equal(T.liveTensors(), before, 'the example leaves no tensor behind');
});
