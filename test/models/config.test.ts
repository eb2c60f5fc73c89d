// config.json validation: unsupported architectures and values are refused naming the field.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseModelConfig } from '../../src/models/config.js';

const base = {
  model_type: 'llama',
  vocab_size: 10,
  hidden_size: 8,
  intermediate_size: 16,
  num_hidden_layers: 1,
  num_attention_heads: 2,
};

test('defaults follow Hugging Face (kv heads = heads, theta 10000, untied, silu)', () => {
  const c = parseModelConfig(base, 'config.json');
  assert.equal(c.numKvHeads, 2);
  assert.equal(c.headDim, 4);
  assert.equal(c.ropeTheta, 10000);
  assert.equal(c.tieWordEmbeddings, false);
  assert.equal(c.qkvBias, false);
  assert.equal(parseModelConfig({ ...base, model_type: 'qwen2' }, 'c').qkvBias, true);
  assert.equal(parseModelConfig({ ...base, model_type: 'mistral', sliding_window: 4096 }, 'c').slidingWindow, 4096);
  assert.deepEqual(parseModelConfig({ ...base, eos_token_id: [1, 2] }, 'c').eosTokenIds, [1, 2]);
});

test("transformers 5's rope_parameters carry the rotary base and scaling (legacy keys as fallback)", () => {
  const llama3 = {
    rope_type: 'llama3',
    rope_theta: 500000,
    factor: 8,
    low_freq_factor: 1,
    high_freq_factor: 4,
    original_max_position_embeddings: 8192,
  };
  const c = parseModelConfig({ ...base, rope_parameters: llama3 }, 'c');
  assert.equal(c.ropeTheta, 500000);
  assert.deepEqual(c.ropeScaling, {
    type: 'llama3',
    factor: 8,
    lowFreqFactor: 1,
    highFreqFactor: 4,
    originalMaxPositionEmbeddings: 8192,
  });
  const plain = parseModelConfig({ ...base, rope_parameters: { rope_type: 'default', rope_theta: 1e6 } }, 'c');
  assert.equal(plain.ropeTheta, 1e6);
  assert.equal(plain.ropeScaling, null);
  const linear = parseModelConfig({ ...base, rope_theta: 5000, rope_parameters: { type: 'linear', factor: 2 } }, 'c');
  assert.equal(linear.ropeTheta, 5000);
  assert.deepEqual(linear.ropeScaling, { type: 'linear', factor: 2 });
});

test('bad or unsupported values name their field', () => {
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ ...base, model_type: 'gpt2' }, /'model_type' must be one of llama, mistral, qwen2; got 'gpt2'/],
    [{ ...base, num_key_value_heads: 3 }, /'num_key_value_heads' \(3\) must divide num_attention_heads/],
    [{ ...base, hidden_act: 'gelu' }, /'hidden_act' 'gelu' is not supported/],
    [{ ...base, rope_scaling: { rope_type: 'yarn', factor: 4 } }, /'rope_scaling' has type 'yarn'/],
    [{ ...base, rope_scaling: { rope_type: 'linear' } }, /factor' is required/],
    [{ ...base, rope_parameters: { rope_type: 'yarn', factor: 4 } }, /'rope_parameters' has type 'yarn'/],
    [{ ...base, rope_parameters: { full_attention: { rope_type: 'default' } } }, /'rope_parameters' has no rope_type/],
    [{ ...base, vocab_size: 0 }, /'vocab_size' must be >= 1/],
    [{ ...base, hidden_size: 'big' }, /'hidden_size' must be an integer/],
    [{ ...base, model_type: 'qwen2', use_sliding_window: true }, /'use_sliding_window'/],
    [{ ...base, hidden_size: 7 }, /'hidden_size' \(7\) must be a multiple/],
  ];
  for (const [cfg, re] of cases)
    assert.throws(
      () => parseModelConfig(cfg, 'x/config.json'),
      (e: Error) => re.test(e.message) && e.message.startsWith('x/config.json'),
      re.source,
    );
});
