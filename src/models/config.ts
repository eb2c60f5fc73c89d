// Model configuration: Hugging Face config.json for LLaMA, Mistral, Qwen2, Gemma, Gemma 2 and Phi-3,
// validated; missing keys take the defaults of transformers' config classes.
import { Fields, showValue } from '../util/fields.js';
import { UserError } from '../util/errors.js';
import { readJson } from '../util/files.js';
import type { RopeScaling } from '../nn/rope.js';
import { familyFields, familyHfConfig, type FamilyFields } from './family-config.js';

export type Architecture = 'llama' | 'mistral' | 'qwen2' | 'gemma' | 'gemma2' | 'phi3';
export const ARCHITECTURES: readonly Architecture[] = ['llama', 'mistral', 'qwen2', 'gemma', 'gemma2', 'phi3'];
/** The gated feed-forward's activation: silu (LLaMA, Mistral, Qwen2, Phi-3) or tanh-approximated GELU (Gemma). */
export type Activation = 'silu' | 'gelu_pytorch_tanh';

// How rotary frequencies are scaled belongs to the rotary tables (nn/rope.ts); the config reads it.
export type { RopeScaling };

export interface ModelConfig extends FamilyFields {
  architecture: Architecture;
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  rmsNormEps: number;
  ropeTheta: number;
  ropeScaling: RopeScaling | null;
  maxPositionEmbeddings: number;
  tieWordEmbeddings: boolean;
  /** Biases on q/k/v (Qwen2, LLaMA with attention_bias). */
  qkvBias: boolean;
  /** Bias on o_proj (LLaMA with attention_bias). */
  oBias: boolean;
  /** Biases on gate/up/down (LLaMA with mlp_bias). */
  mlpBias: boolean;
  /** Sliding-window attention (Mistral, Phi-3; Gemma 2 on the layers of slidingLayers): a query sees at
   * most this many keys back (itself included). */
  slidingWindow: number | null;
  bosTokenId: number | null;
  eosTokenIds: number[];
  padTokenId: number | null;
}

function tokenIds(f: Fields, key: string): number[] {
  const v = f.raw(key);
  if (v === undefined || v === null) return [];
  const list = Array.isArray(v) ? v : [v];
  if (!list.every((x) => Number.isSafeInteger(x) && x >= 0))
    f.fail(key, `must be a token id or a list of them, got ${showValue(v)}`);
  return list as number[];
}

/** The rotary scaling that `scaling` describes (a legacy rope_scaling object or transformers 5's rope_parameters). */
function ropeScalingOf(scaling: Fields, where: string, field: string): RopeScaling | null {
  const type = (scaling.has('rope_type') ? scaling.str('rope_type') : scaling.str('type')) as string;
  if (type === 'default') return null;
  const factor = scaling.num('factor', { exclusiveMin: 0 });
  if (type === 'linear') return { type, factor };
  if (type === 'llama3') {
    return {
      type,
      factor,
      lowFreqFactor: scaling.num('low_freq_factor', { exclusiveMin: 0 }),
      highFreqFactor: scaling.num('high_freq_factor', { exclusiveMin: 0 }),
      originalMaxPositionEmbeddings: scaling.int('original_max_position_embeddings', { min: 1 }),
    };
  }
  throw new UserError(
    `${where}: field '${field}' has type '${type}', which is not supported (supported: default, linear, llama3)`,
  );
}

/** Rotary base and scaling: transformers ≥ 5 writes both in "rope_parameters" ({rope_type, rope_theta,
 * factor, ...}); older configs use top-level "rope_theta" and "rope_scaling". */
function rope(f: Fields): { theta: number; scaling: RopeScaling | null } {
  const params = f.raw('rope_parameters');
  if (params !== undefined && params !== null) {
    const ropeParams = Fields.of(params, `${f.where}: rope_parameters`);
    if (!ropeParams.has('rope_type') && !ropeParams.has('type'))
      f.fail('rope_parameters', 'has no rope_type (per-layer-type rope parameters are not supported)');
    return {
      theta: ropeParams.num('rope_theta', {
        default: f.num('rope_theta', { default: 10000, exclusiveMin: 0 }),
        exclusiveMin: 0,
      }),
      scaling: ropeScalingOf(ropeParams, f.where, 'rope_parameters'),
    };
  }
  const v = f.raw('rope_scaling');
  return {
    theta: f.num('rope_theta', { default: 10000, exclusiveMin: 0 }),
    scaling:
      v === undefined || v === null
        ? null
        : ropeScalingOf(Fields.of(v, `${f.where}: rope_scaling`), f.where, 'rope_scaling'),
  };
}

/** Validates a parsed config.json. `where` names it in errors. */
export function parseModelConfig(json: unknown, where: string): ModelConfig {
  const f = Fields.of(json, where);
  const architecture = f.str<Architecture>('model_type', { oneOf: ARCHITECTURES });
  const isGemma = architecture === 'gemma' || architecture === 'gemma2';
  const hiddenSize = f.int('hidden_size', { min: 1 });
  const numHeads = f.int('num_attention_heads', { min: 1 });
  const numKvHeads = f.int('num_key_value_heads', { default: numHeads, min: 1 });
  if (numHeads % numKvHeads !== 0)
    f.fail('num_key_value_heads', `(${numKvHeads}) must divide num_attention_heads (${numHeads})`);
  // Gemma's config classes default head_dim to 256, whatever the hidden size.
  if (!f.has('head_dim') && !isGemma && hiddenSize % numHeads !== 0)
    f.fail('hidden_size', `(${hiddenSize}) must be a multiple of num_attention_heads (${numHeads})`);
  const headDim = f.int('head_dim', { default: isGemma ? 256 : hiddenSize / numHeads, min: 2 });
  if (headDim % 2 !== 0) f.fail('head_dim', `must be even for rotary embeddings, got ${headDim}`);
  if (!isGemma) {
    const act = f.str('hidden_act', { default: 'silu' });
    if (act !== 'silu' && act !== 'swish')
      f.fail('hidden_act', `'${act}' is not supported (LLaMA-family and Phi-3 models use silu)`);
  }
  const attentionBias = architecture !== 'phi3' && f.bool('attention_bias', false);
  let slidingWindow: number | null = null;
  if (architecture === 'mistral') slidingWindow = f.optInt('sliding_window', { min: 1 });
  if (architecture === 'qwen2' && f.has('use_sliding_window') && f.bool('use_sliding_window')) {
    f.fail('use_sliding_window', 'true is not supported (Qwen2 checkpoints ship with false)');
  }
  const family = familyFields(f, architecture, headDim);
  if (family.slidingWindow !== undefined) slidingWindow = family.slidingWindow;
  const rotary = rope(f);
  const cfg: ModelConfig = {
    ...family.fields,
    architecture,
    vocabSize: f.int('vocab_size', { min: 1 }),
    hiddenSize,
    intermediateSize: f.int('intermediate_size', { min: 1 }),
    numLayers: f.int('num_hidden_layers', { min: 1 }),
    numHeads,
    numKvHeads,
    headDim,
    rmsNormEps: f.num('rms_norm_eps', { default: architecture === 'phi3' ? 1e-5 : 1e-6, exclusiveMin: 0 }),
    ropeTheta: rotary.theta,
    ropeScaling: rotary.scaling,
    maxPositionEmbeddings: f.int('max_position_embeddings', { default: family.maxPositionEmbeddings, min: 1 }),
    tieWordEmbeddings: f.bool('tie_word_embeddings', isGemma),
    qkvBias: architecture === 'qwen2' || attentionBias,
    oBias: architecture !== 'qwen2' && attentionBias,
    mlpBias: f.bool('mlp_bias', false),
    slidingWindow,
    bosTokenId: f.optInt('bos_token_id', { min: 0 }),
    eosTokenIds: tokenIds(f, 'eos_token_id'),
    padTokenId: f.optInt('pad_token_id', { min: 0 }),
  };
  return cfg;
}

/** The sliding window of layer l, or null for full attention. */
export function layerWindow(c: ModelConfig, l: number): number | null {
  if (c.slidingWindow === null) return null;
  return c.slidingLayers === null || c.slidingLayers[l] ? c.slidingWindow : null;
}

export function readModelConfig(file: string): ModelConfig {
  return parseModelConfig(readJson(file), file);
}

/** The config.json a Hugging Face folder would carry for this model. */
export function toHfConfig(c: ModelConfig, torchDtype = 'float32'): Record<string, unknown> {
  const archName = {
    llama: 'LlamaForCausalLM',
    mistral: 'MistralForCausalLM',
    qwen2: 'Qwen2ForCausalLM',
    gemma: 'GemmaForCausalLM',
    gemma2: 'Gemma2ForCausalLM',
    phi3: 'Phi3ForCausalLM',
  }[c.architecture];
  const out: Record<string, unknown> = {
    architectures: [archName],
    model_type: c.architecture,
    vocab_size: c.vocabSize,
    hidden_size: c.hiddenSize,
    intermediate_size: c.intermediateSize,
    num_hidden_layers: c.numLayers,
    num_attention_heads: c.numHeads,
    num_key_value_heads: c.numKvHeads,
    head_dim: c.headDim,
    hidden_act: c.hiddenAct,
    rms_norm_eps: c.rmsNormEps,
    rope_theta: c.ropeTheta,
    rope_scaling:
      c.ropeScaling === null
        ? null
        : c.ropeScaling.type === 'linear'
          ? { rope_type: 'linear', factor: c.ropeScaling.factor }
          : {
              rope_type: 'llama3',
              factor: c.ropeScaling.factor,
              low_freq_factor: c.ropeScaling.lowFreqFactor,
              high_freq_factor: c.ropeScaling.highFreqFactor,
              original_max_position_embeddings: c.ropeScaling.originalMaxPositionEmbeddings,
            },
    max_position_embeddings: c.maxPositionEmbeddings,
    tie_word_embeddings: c.tieWordEmbeddings,
    torch_dtype: torchDtype,
  };
  if (c.architecture === 'llama') {
    out.attention_bias = c.qkvBias;
    out.mlp_bias = c.mlpBias;
  }
  if (c.architecture === 'mistral') out.sliding_window = c.slidingWindow;
  Object.assign(out, familyHfConfig(c));
  if (c.bosTokenId !== null) out.bos_token_id = c.bosTokenId;
  if (c.eosTokenIds.length) out.eos_token_id = c.eosTokenIds.length === 1 ? c.eosTokenIds[0] : c.eosTokenIds;
  if (c.padTokenId !== null) out.pad_token_id = c.padTokenId;
  return out;
}

/** Keys transformers' config classes type as float: its strict validation refuses a JSON integer there. */
const FLOAT_KEYS = new Set([
  'rms_norm_eps',
  'rope_theta',
  'factor',
  'low_freq_factor',
  'high_freq_factor',
  'attn_logit_softcapping',
  'final_logit_softcapping',
  'partial_rotary_factor',
]);

/** toHfConfig as config.json text, whole floats written as floats (4.0, not 4). */
export function hfConfigText(c: ModelConfig, torchDtype = 'float32'): string {
  const mark = '\u0000float:';
  const text = JSON.stringify(
    toHfConfig(c, torchDtype),
    (key, v: unknown) => (FLOAT_KEYS.has(key) && Number.isInteger(v) ? `${mark}${v as number}` : v),
    2,
  );
  return text.replace(/"\\u0000float:(-?\d+)"/g, '$1.0') + '\n';
}
