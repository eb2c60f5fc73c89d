// adapter_config.json: LoRA/DoRA (HF PEFT's "LORA") and MixLoRA/MixDoRA ("MIXLORA", the reference
// tools' keys), validated with errors that name the field (docs/design.md §9.1).
import { Fields } from '../util/fields.js';
import type { Activation } from '../models/config.js';
import { MLP_PROJECTIONS, PROJECTIONS, type ProjName } from '../models/weights.js';

export type RoutingStrategy = 'mixlora' | 'mixlora-dynamic' | 'mixlora-switch';
export const ROUTING_STRATEGIES: readonly RoutingStrategy[] = ['mixlora', 'mixlora-dynamic', 'mixlora-switch'];

export interface LoraSettings {
  r: number;
  alpha: number;
  dropout: number;
  useDora: boolean;
  useRslora: boolean;
  init: 'original' | 'gaussian';
}

export interface MoeSettings {
  routingStrategy: RoutingStrategy;
  numExperts: number;
  /** mixlora: experts per token. */
  topK: number;
  /** mixlora-dynamic: keep experts until their probability sum exceeds this. */
  topP: number;
  /** mixlora-dynamic: router logits are divided by it before the softmax when > 0. */
  temperature: number;
  /** mixlora-switch: tokens an expert takes per sequence; later ones skip the FFN. */
  expertCapacity: number;
  routerAuxLossCoef: number;
  /** mixlora-switch: coefficient of the router z-loss. */
  routerZLossCoef: number;
  routerInitRange: number;
  jitterNoise: number;
  routerLoss: boolean;
  /** mixlora-switch: dropout on the expert output in training. */
  ffnDropout: number;
  /** LoRA settings of the experts (expert_lora overrides the top-level ones). */
  expert: LoraSettings;
  /** act_fn: the experts' activation, which must be the base model's; null: the base model's. */
  actFn: Activation | null;
}

export interface AdapterConfig {
  peftType: 'LORA' | 'MIXLORA';
  taskType: string;
  baseModel: string | null;
  targetModules: ProjName[];
  /** Top-level LoRA settings: every target of a LORA adapter, the attention targets of a MIXLORA one. */
  lora: LoraSettings;
  moe: MoeSettings | null;
}

export const isMoe = (c: AdapterConfig): c is AdapterConfig & { moe: MoeSettings } => c.moe !== null;
export const scaling = (s: LoraSettings) => (s.useRslora ? s.alpha / Math.sqrt(s.r) : s.alpha / s.r);
export const isMlpProj = (p: ProjName) => (MLP_PROJECTIONS as readonly string[]).includes(p);

function targetModules(f: Fields): ProjName[] {
  const v = f.raw('target_modules');
  let names: string[];
  if (Array.isArray(v) && v.every((x) => typeof x === 'string')) names = v;
  else if (v && typeof v === 'object' && !Array.isArray(v) && Object.values(v).every((x) => typeof x === 'boolean')) {
    names = Object.entries(v as Record<string, boolean>)
      .filter(([, on]) => on)
      .map(([k]) => k);
  } else {
    f.fail('target_modules', 'must be a list of module names (or {name: true|false})');
  }
  for (const n of names) {
    if (!(PROJECTIONS as readonly string[]).includes(n))
      f.fail('target_modules', `names '${n}', which is not one of ${PROJECTIONS.join(', ')}`);
  }
  if (names.length === 0) f.fail('target_modules', 'is empty');
  return PROJECTIONS.filter((p) => names.includes(p));
}

function loraSettings(f: Fields, defaults?: LoraSettings): LoraSettings {
  const r = f.int('r', { default: defaults?.r, min: 1 });
  const alpha = f.num('lora_alpha', { default: defaults?.alpha, exclusiveMin: 0 });
  const dropout = f.num('lora_dropout', { default: defaults?.dropout ?? 0, min: 0, max: 0.999 });
  const useDora = f.bool('use_dora', defaults?.useDora ?? false);
  const useRslora = f.bool('use_rslora', defaults?.useRslora ?? false);
  // The reference's lora_init, or HF PEFT's init_lora_weights (true = original).
  let init = defaults?.init ?? 'original';
  if (f.has('lora_init')) init = f.str('lora_init', { oneOf: ['original', 'gaussian'] as const });
  else if (f.has('init_lora_weights')) {
    const v = f.raw('init_lora_weights');
    if (v === true || v === 'gaussian') init = v === true ? 'original' : 'gaussian';
    else f.fail('init_lora_weights', `${JSON.stringify(v)} is not supported (true or "gaussian")`);
  }
  return { r, alpha, dropout, useDora, useRslora, init };
}

/** HF PEFT features we do not implement must not be silently ignored. */
const UNSUPPORTED_PEFT = [
  'rank_pattern',
  'alpha_pattern',
  'layers_to_transform',
  'modules_to_save',
  'fan_in_fan_out',
  'layer_replication',
  'use_qalora',
  'target_parameters',
  // PEFT options that change the forward pass (a bias on B, activated LoRA, Arrow routing, BD-LoRA, KaSA,
  // MonteCLoRA, trainable token rows): loading such an adapter as plain LoRA would compute something else.
  'lora_bias',
  'alora_invocation_tokens',
  'arrow_config',
  'use_bdlora',
  'kasa_config',
  'monteclora_config',
  'trainable_token_indices',
];

function refuseUnsupportedPeft(f: Fields): void {
  const empty = (v: unknown) =>
    v === undefined || v === null || v === false || (typeof v === 'object' && Object.keys(v as object).length === 0);
  for (const key of UNSUPPORTED_PEFT) {
    if (!empty(f.obj[key])) f.fail(key, `${JSON.stringify(f.obj[key])} is not supported by mixlora`);
  }
  const bias = f.obj.bias;
  if (bias !== undefined && bias !== 'none') f.fail('bias', `"${String(bias)}" is not supported (only "none")`);
}

/** Validates a parsed adapter_config.json. `where` names the file in errors. With `strict` (an
 * adapter block of our own training config, not a file written by other tools with their own extra
 * keys), unknown keys are refused like the training config's own. */
export function parseAdapterConfig(
  json: unknown,
  where: string,
  locate?: (key: string) => string,
  opts: { strict?: boolean } = {},
): AdapterConfig {
  return parseAdapterFields(json, where, locate, opts.strict ?? false);
}

function parseAdapterFields(
  json: unknown,
  where: string,
  locate: ((key: string) => string) | undefined,
  strict: boolean,
): AdapterConfig {
  const f = Fields.of(json, where, locate);
  const done = <T>(c: T): T => {
    if (strict) f.rejectUnknown([...UNSUPPORTED_PEFT, 'bias']);
    return c;
  };
  const peftType = f.str<'LORA' | 'MIXLORA'>('peft_type', { oneOf: ['LORA', 'MIXLORA'] as const });
  const taskType = f.str('task_type', { default: 'CAUSAL_LM' });
  if (taskType !== 'CAUSAL_LM' && taskType !== 'QUESTION_ANS')
    f.fail('task_type', `'${taskType}' is not supported (CAUSAL_LM)`);
  const baseModel = f.optStr('base_model_name_or_path');
  refuseUnsupportedPeft(f);
  const targets = targetModules(f);
  const lora = loraSettings(f);
  if (peftType === 'LORA') return done({ peftType, taskType, baseModel, targetModules: targets, lora, moe: null });

  const strategy = f.str('routing_strategy') as string;
  if (strategy === 'mixtral')
    f.fail(
      'routing_strategy',
      "'mixtral' is the legacy m-LoRA format: convert it with `mixlora convert --from mlora-legacy`",
    );
  if (!(ROUTING_STRATEGIES as readonly string[]).includes(strategy))
    f.fail('routing_strategy', `'${strategy}' is unknown (one of ${ROUTING_STRATEGIES.join(', ')})`);
  const routingStrategy = strategy as RoutingStrategy;
  const numExperts = f.int('num_experts', { min: 1 });
  const topK = f.int('top_k', { default: 2, min: 1 });
  if (routingStrategy === 'mixlora' && topK > numExperts)
    f.fail('top_k', `(${topK}) is larger than num_experts (${numExperts})`);
  const act = f.optStr('act_fn');
  if (act !== null && act !== 'silu' && act !== 'gelu_pytorch_tanh')
    f.fail('act_fn', `'${act}' is not supported (the experts use the base model's silu or gelu_pytorch_tanh)`);
  let expert = lora;
  const e = f.raw('expert_lora');
  if (e !== undefined && e !== null) {
    const fe = Fields.of(e, `${where}: expert_lora`, locate && (() => `${locate('expert_lora')}.expert_lora`));
    expert = loraSettings(fe, lora);
    if (strict) fe.rejectUnknown();
  }
  const switchDefaults = routingStrategy === 'mixlora-switch';
  const moe: MoeSettings = {
    routingStrategy,
    numExperts,
    topK: routingStrategy === 'mixlora-switch' ? 1 : topK,
    topP: f.num('top_p', { default: 0.8, exclusiveMin: 0, max: 1 }),
    temperature: f.num('temperature', { default: 0, min: 0 }),
    expertCapacity: f.int('expert_capacity', { default: 32, min: 1 }),
    routerAuxLossCoef: f.num('router_aux_loss_coef', { default: 0.001, min: 0 }),
    routerZLossCoef: f.num('router_z_loss_coef', { default: 0.001, min: 0 }),
    routerInitRange: f.num('router_init_range', { default: switchDefaults ? 1.0 : 0.02, min: 0 }),
    jitterNoise: f.num('jitter_noise', { default: switchDefaults ? 0.01 : 0, min: 0, max: 0.999 }),
    routerLoss: f.bool('router_loss', true),
    ffnDropout: f.num('ffn_dropout', { default: 0, min: 0, max: 0.999 }),
    expert,
    actFn: act as Activation | null,
  };
  if (!targets.some(isMlpProj))
    f.fail(
      'target_modules',
      'of a MIXLORA adapter must include at least one of gate_proj, up_proj, down_proj (the experts)',
    );
  return done({ peftType, taskType, baseModel, targetModules: targets, lora, moe });
}

function loraJson(s: LoraSettings): Record<string, unknown> {
  return {
    r: s.r,
    lora_alpha: s.alpha,
    lora_dropout: s.dropout,
    use_dora: s.useDora,
    use_rslora: s.useRslora,
    lora_init: s.init,
  };
}

/** adapter_config.json as written: HF PEFT's layout for LORA, the reference keys for MIXLORA. */
export function exportAdapterConfig(c: AdapterConfig): Record<string, unknown> {
  if (!isMoe(c)) {
    return {
      peft_type: 'LORA',
      task_type: c.taskType,
      base_model_name_or_path: c.baseModel,
      // PEFT's own key only: PEFT warns about keys its LoraConfig lacks (lora_init) when loading.
      ...Object.fromEntries(Object.entries(loraJson(c.lora)).filter(([k]) => k !== 'lora_init')),
      init_lora_weights: c.lora.init === 'original' ? true : 'gaussian',
      target_modules: c.targetModules,
      bias: 'none',
      fan_in_fan_out: false,
      inference_mode: true,
      modules_to_save: null,
      layers_to_transform: null,
    };
  }
  const m = c.moe;
  const out: Record<string, unknown> = {
    peft_type: 'MIXLORA',
    task_type: c.taskType,
    base_model_name_or_path: c.baseModel,
    ...loraJson(c.lora),
    target_modules: c.targetModules,
    bias: 'none',
    routing_strategy: m.routingStrategy,
    num_experts: m.numExperts,
    router_aux_loss_coef: m.routerAuxLossCoef,
    router_init_range: m.routerInitRange,
    jitter_noise: m.jitterNoise,
    router_loss: m.routerLoss,
    act_fn: m.actFn ?? 'silu',
  };
  if (m.routingStrategy === 'mixlora') out.top_k = m.topK;
  if (m.routingStrategy === 'mixlora-dynamic') {
    out.top_p = m.topP;
    out.temperature = m.temperature;
  }
  if (m.routingStrategy === 'mixlora-switch') {
    out.expert_capacity = m.expertCapacity;
    out.router_z_loss_coef = m.routerZLossCoef;
    out.ffn_dropout = m.ffnDropout;
  }
  if (JSON.stringify(m.expert) !== JSON.stringify(c.lora)) out.expert_lora = loraJson(m.expert);
  return out;
}

/** The config with act_fn set to the model's activation when the file left it out (so that saving writes it). */
export function withModelActivation(c: AdapterConfig, act: Activation): AdapterConfig {
  return c.moe && c.moe.actFn === null ? { ...c, moe: { ...c.moe, actFn: act } } : c;
}

export function describeAdapter(c: AdapterConfig): string {
  const kind = isMoe(c) ? (c.moe.expert.useDora ? 'MixDoRA' : 'MixLoRA') : c.lora.useDora ? 'DoRA' : 'LoRA';
  return kind;
}
