// Gemma's embedding scale is √hidden_size rounded to the embeddings' dtype before the product, as
// transformers' GemmaTextScaledWordEmbedding does (its float32 buffer `.to(self.weight.dtype)`): in bfloat16
// the product equals e · bf16(√H) exactly, which differs from e · √H rounded once on some elements.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as T from '../../src/tensor/index.js';
import { parseModelConfig } from '../../src/models/config.js';
import { scaleEmbeddings } from '../../src/models/gemma.js';

test('Gemma scales bfloat16 embeddings by √H rounded to bfloat16 (bit for bit), others not at all', () =>
  T.tidy(() => {
    const cfg = (model_type: string) =>
      parseModelConfig(
        {
          model_type,
          vocab_size: 8,
          hidden_size: 32,
          intermediate_size: 8,
          num_hidden_layers: 1,
          num_attention_heads: 2,
        },
        'c',
      );
    T.manualSeed(5);
    const e = T.randn([4096]).to('bfloat16'); // [N]
    const ours = scaleEmbeddings(e, cfg('gemma')).to('float32').toNumbers();
    const rounded = T.tensor([Math.sqrt(32)])
      .to('bfloat16')
      .to('float32')
      .item(); // 5.65625
    const expected = e.to('float32').mul(rounded).to('bfloat16').to('float32').toNumbers();
    const once = e.to('float32').mul(Math.sqrt(32)).to('bfloat16').to('float32').toNumbers();
    assert.deepEqual(ours, expected);
    assert.ok(
      once.some((v, i) => v !== expected[i]),
      'the test data tells the two roundings apart',
    );
    assert.deepEqual(scaleEmbeddings(e, cfg('llama')).toNumbers(), e.toNumbers());
  }));
