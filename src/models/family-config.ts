// The config.json keys only Gemma, Gemma 2 and Phi-3 have, read with the defaults of transformers' config
// classes (GemmaConfig, Gemma2Config, Phi3Config), so that older files without newer keys load as
// transformers loads them. LLaMA, Mistral and Qwen2 get the neutral values.
import { Fields } from '../util/fields.js';
import type { Activation, Architecture, ModelConfig } from './config.js';

export interface FamilyFields {
  /** The gated feed-forward's activation. */
  hiddenAct: Activation;
  /** How many leading dimensions of each head rotate: head_dim × partial_rotary_factor (Phi-3), else head_dim. */
  rotaryDim: number;
  /** Which layers use slidingWindow (Gemma 2's layer_types); null: every layer when slidingWindow is set. */
  slidingLayers: boolean[] | null;
  /** Attention scores are q·k · attentionScalar^-0.5: head_dim, or Gemma 2's query_pre_attn_scalar. */
  attentionScalar: number;
  /** Gemma 2: scores become tanh(s / cap) · cap before the mask and softmax. */
  attnLogitSoftcap: number | null;
  /** Gemma 2: logits become tanh(l / cap) · cap. */
  finalLogitSoftcap: number | null;
}

/** LLaMA's values: silu, full rotary, no soft-caps, scores scaled by head_dim^-0.5. */
export function llamaFamilyFields(headDim: number): FamilyFields {
  return {
    hiddenAct: 'silu',
    rotaryDim: headDim,
    slidingLayers: null,
    attentionScalar: headDim,
    attnLogitSoftcap: null,
    finalLogitSoftcap: null,
  };
}

/** The family's fields, its sliding window when it has its own key for it, and its default context length. */
export function familyFields(
  f: Fields,
  arch: Architecture,
  headDim: number,
): { fields: FamilyFields; slidingWindow?: number | null; maxPositionEmbeddings: number } {
  const neutral = llamaFamilyFields(headDim);
  if (arch === 'gemma') return { fields: { ...neutral, hiddenAct: gemmaActivation(f) }, maxPositionEmbeddings: 8192 };
  if (arch === 'gemma2') return gemma2(f, neutral);
  if (arch === 'phi3') return phi3(f, neutral, headDim);
  return { fields: neutral, maxPositionEmbeddings: 2048 };
}

function refuseBidirectional(f: Fields): void {
  if (f.has('use_bidirectional_attention') && f.raw('use_bidirectional_attention') !== null)
    if (f.bool('use_bidirectional_attention')) f.fail('use_bidirectional_attention', 'true is not supported');
}

/** GemmaConfig reads hidden_act and turns the legacy "gelu" of the first releases into the tanh
 * approximation (configuration_gemma.py, __post_init__). */
function gemmaActivation(f: Fields): Activation {
  refuseBidirectional(f);
  const act: string = f.str('hidden_act', { default: 'gelu_pytorch_tanh' as string });
  if (act !== 'gelu' && act !== 'gelu_pytorch_tanh')
    f.fail('hidden_act', `'${act}' is not supported (Gemma uses gelu_pytorch_tanh; "gelu" is read as it)`);
  return 'gelu_pytorch_tanh';
}

/** Gemma2Config: the MLP reads hidden_activation (not hidden_act); layer_types defaults to sliding
 * attention on even layers (0, 2, ...) and full attention on odd ones (configuration_gemma2.py). */
function gemma2(
  f: Fields,
  neutral: FamilyFields,
): { fields: FamilyFields; slidingWindow: number | null; maxPositionEmbeddings: number } {
  refuseBidirectional(f);
  const act: string = f.str('hidden_activation', { default: 'gelu_pytorch_tanh' as string });
  if (act !== 'gelu_pytorch_tanh') f.fail('hidden_activation', `'${act}' is not supported (gelu_pytorch_tanh)`);
  const layers = f.int('num_hidden_layers', { min: 1 });
  const slidingWindow = 'sliding_window' in f.obj ? f.optInt('sliding_window', { min: 1 }) : 4096;
  const types = f.raw('layer_types');
  let slidingLayers: boolean[];
  if (types === undefined || types === null) {
    slidingLayers = Array.from({ length: layers }, (_, i) => (i + 1) % 2 === 1);
  } else {
    if (!Array.isArray(types) || types.length !== layers)
      f.fail('layer_types', `must list one type per layer (${layers}), got ${JSON.stringify(types)}`);
    slidingLayers = types.map((t, i) => {
      if (t !== 'sliding_attention' && t !== 'full_attention')
        f.fail('layer_types', `[${i}] is ${JSON.stringify(t)} (sliding_attention or full_attention)`);
      return t === 'sliding_attention';
    });
  }
  // An explicit null turns a soft-cap off; an absent key takes the default.
  const cap = (key: string, def: number) => (key in f.obj ? f.optNum(key, { exclusiveMin: 0 }) : def);
  return {
    fields: {
      ...neutral,
      hiddenAct: 'gelu_pytorch_tanh',
      slidingLayers,
      attentionScalar: f.num('query_pre_attn_scalar', { default: 256, exclusiveMin: 0 }),
      attnLogitSoftcap: cap('attn_logit_softcapping', 50),
      finalLogitSoftcap: cap('final_logit_softcapping', 30),
    },
    slidingWindow,
    maxPositionEmbeddings: 8192,
  };
}

/** Phi3Config: partial_rotary_factor in rope_parameters (transformers ≥ 5) or at the top level (older
 * files); sliding_window applies to every layer when set (modeling_phi3.py). */
function phi3(
  f: Fields,
  neutral: FamilyFields,
  headDim: number,
): { fields: FamilyFields; slidingWindow: number | null; maxPositionEmbeddings: number } {
  // Phi3Config accepts only the default rotary embedding and LongRoPE ("su", "yarn" and "longrope"), which
  // mixlora does not implement.
  for (const key of ['rope_scaling', 'rope_parameters']) {
    const v = f.raw(key) as Record<string, unknown> | null | undefined;
    const type = v && typeof v === 'object' ? (v.rope_type ?? v.type) : undefined;
    if (type !== undefined && type !== 'default')
      f.fail(key, `has type ${JSON.stringify(type)}: Phi-3 is supported with the default rotary embedding only`);
  }
  const params = f.raw('rope_parameters');
  const inParams = params !== null && typeof params === 'object' && 'partial_rotary_factor' in params;
  const where = inParams ? Fields.of(params, `${f.where}: rope_parameters`) : f;
  const factor = where.num('partial_rotary_factor', { default: 1, exclusiveMin: 0, max: 1 });
  const rotaryDim = Math.floor(headDim * factor);
  if (rotaryDim % 2 !== 0 || rotaryDim === 0)
    where.fail('partial_rotary_factor', `(${factor}) gives ${rotaryDim} rotary dimensions of ${headDim}; must be even`);
  return {
    fields: { ...neutral, rotaryDim },
    slidingWindow: f.optInt('sliding_window', { min: 1 }),
    maxPositionEmbeddings: 4096,
  };
}

/** The family's own keys of the config.json written for a model (toHfConfig adds the common ones). */
export function familyHfConfig(c: ModelConfig): Record<string, unknown> {
  if (c.architecture === 'gemma') return { attention_bias: c.qkvBias };
  if (c.architecture === 'gemma2') {
    return {
      attention_bias: c.qkvBias,
      hidden_activation: c.hiddenAct,
      query_pre_attn_scalar: c.attentionScalar,
      sliding_window: c.slidingWindow,
      layer_types: c.slidingLayers?.map((s) => (s ? 'sliding_attention' : 'full_attention')),
      attn_logit_softcapping: c.attnLogitSoftcap,
      final_logit_softcapping: c.finalLogitSoftcap,
    };
  }
  if (c.architecture === 'phi3')
    return { sliding_window: c.slidingWindow, partial_rotary_factor: c.rotaryDim / c.headDim };
  return {};
}
