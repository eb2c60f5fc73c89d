// config.json validation: unsupported architectures and values are refused naming the field; Gemma, Gemma 2
// and Phi-3 keys missing from older files take transformers' config-class defaults.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { hfConfigText, layerWindow, parseModelConfig } from '../../src/models/config.js';

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
    [
      { ...base, model_type: 'gpt2' },
      /'model_type' must be one of llama, mistral, qwen2, gemma, gemma2, phi3; got 'gpt2'/,
    ],
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

test("Gemma: transformers' defaults (head_dim 256, tied head, the legacy 'gelu' read as the tanh GELU)", () => {
  const gemma = { ...base, model_type: 'gemma', hidden_act: 'gelu' };
  const c = parseModelConfig(gemma, 'c');
  assert.equal(c.headDim, 256);
  assert.equal(c.tieWordEmbeddings, true);
  assert.equal(c.hiddenAct, 'gelu_pytorch_tanh');
  assert.equal(c.rmsNormEps, 1e-6);
  assert.equal(c.maxPositionEmbeddings, 8192);
  assert.equal(c.attnLogitSoftcap, null);
  assert.equal(layerWindow(c, 0), null);
  assert.equal(parseModelConfig({ ...gemma, head_dim: 6 }, 'c').headDim, 6);
});

test("Gemma 2: layer_types default to sliding on even layers; soft-caps, window and scalar as transformers' defaults", () => {
  const g2 = { ...base, model_type: 'gemma2', num_hidden_layers: 3 };
  const c = parseModelConfig(g2, 'c');
  assert.deepEqual(c.slidingLayers, [true, false, true]);
  assert.deepEqual(
    [0, 1, 2].map((l) => layerWindow(c, l)),
    [4096, null, 4096],
  );
  assert.equal(c.attentionScalar, 256);
  assert.equal(c.attnLogitSoftcap, 50);
  assert.equal(c.finalLogitSoftcap, 30);
  const explicit = parseModelConfig(
    {
      ...g2,
      sliding_window: 8,
      layer_types: ['full_attention', 'sliding_attention', 'full_attention'],
      attn_logit_softcapping: null,
      final_logit_softcapping: null,
      query_pre_attn_scalar: 144,
    },
    'c',
  );
  assert.deepEqual(
    [0, 1, 2].map((l) => layerWindow(explicit, l)),
    [null, 8, null],
  );
  assert.equal(explicit.attnLogitSoftcap, null);
  assert.equal(explicit.finalLogitSoftcap, null);
  assert.equal(explicit.attentionScalar, 144);
});

test('Phi-3: partial_rotary_factor at the top level or in rope_parameters; untied; eps 1e-5', () => {
  const phi3 = { ...base, model_type: 'phi3', hidden_size: 16, num_attention_heads: 2 };
  const c = parseModelConfig({ ...phi3, partial_rotary_factor: 0.5 }, 'c');
  assert.equal(c.headDim, 8);
  assert.equal(c.rotaryDim, 4);
  assert.equal(c.tieWordEmbeddings, false);
  assert.equal(c.rmsNormEps, 1e-5);
  const v5 = parseModelConfig(
    { ...phi3, rope_parameters: { rope_type: 'default', rope_theta: 1e4, partial_rotary_factor: 0.75 } },
    'c',
  );
  assert.equal(v5.rotaryDim, 6);
  assert.equal(parseModelConfig({ ...phi3, sliding_window: 5 }, 'c').slidingWindow, 5);
});

test('family keys that are not supported name their field', () => {
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ ...base, model_type: 'gemma', hidden_act: 'relu' }, /'hidden_act' 'relu' is not supported/],
    [{ ...base, model_type: 'gemma', use_bidirectional_attention: true }, /'use_bidirectional_attention'/],
    [{ ...base, model_type: 'gemma2', hidden_activation: 'gelu' }, /'hidden_activation' 'gelu' is not supported/],
    [
      { ...base, model_type: 'gemma2', layer_types: ['full_attention', 'full_attention'] },
      /'layer_types' must list one type per layer/,
    ],
    [
      { ...base, model_type: 'gemma2', layer_types: ['chunked_attention'] },
      /'layer_types' \[0\] is "chunked_attention"/,
    ],
    [{ ...base, model_type: 'phi3', partial_rotary_factor: 0.3 }, /'partial_rotary_factor' \(0.3\) gives 1 rotary/],
    [
      { ...base, model_type: 'phi3', rope_scaling: { type: 'longrope', short_factor: [1], long_factor: [1] } },
      /'rope_scaling' has type "longrope": Phi-3 is supported with the default rotary embedding only/,
    ],
    [
      { ...base, model_type: 'phi3', rope_parameters: { rope_type: 'linear', factor: 2 } },
      /'rope_parameters' has type "linear"/,
    ],
    [{ ...base, model_type: 'phi3', hidden_act: 'gelu' }, /'hidden_act' 'gelu' is not supported/],
  ];
  for (const [cfg, re] of cases)
    assert.throws(
      () => parseModelConfig(cfg, 'x/config.json'),
      (e: Error) => re.test(e.message) && e.message.startsWith('x/config.json'),
      re.source,
    );
});

test('the config.json written for a model (merge) reads back as the same config, for every family', () => {
  const configs = [
    { ...base, model_type: 'gemma', head_dim: 6, attention_bias: true },
    {
      ...base,
      model_type: 'gemma2',
      num_hidden_layers: 2,
      head_dim: 6,
      sliding_window: 3,
      query_pre_attn_scalar: 10,
      attn_logit_softcapping: 2,
      final_logit_softcapping: null,
    },
    { ...base, model_type: 'phi3', partial_rotary_factor: 0.5, sliding_window: 7 },
  ];
  for (const raw of configs) {
    const c = parseModelConfig(raw, 'c');
    assert.deepEqual(parseModelConfig(JSON.parse(hfConfigText(c)), 'again'), c, raw.model_type);
  }
});
