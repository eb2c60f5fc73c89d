// The trainable tensors of an adapter, per decoder layer: plain LoRA/DoRA modules, and for MixLoRA a
// float32 router and the experts' LoRA weights stacked ([E, r, in], [E, out, r], [E, out]).
// buildAdapterLayers is the one place that lists an adapter's tensors and their shapes (creating,
// loading); adapterParams the one walk over them (parameters, saving, checkpoints).
import { noGrad } from '../tensor/autograd.js';
import { randn, rand, zeros } from '../tensor/create.js';
import { tidy } from '../tensor/scope.js';
import type { Device, Tensor } from '../tensor/tensor.js';
import type { ModelConfig } from '../models/config.js';
import {
  MLP_PROJECTIONS,
  projectionShape,
  projectionsOf,
  type FrozenWeight,
  type ProjName,
} from '../models/weights.js';
import { UserError } from '../util/errors.js';
import { isMlpProj, scaling, type AdapterConfig, type LoraSettings, type MoeSettings } from './config.js';
import type { LoraPart } from './keys.js';
import { doraWeightNorm, type LoraParams } from './lora.js';

export type MlpProj = (typeof MLP_PROJECTIONS)[number];

export interface MoeLayer {
  /** [E, hidden], float32 */
  router: Tensor;
  /** Each expert module's tensors stacked on a first dimension of size E. */
  experts: Partial<Record<MlpProj, LoraParams>>;
  settings: MoeSettings;
}

export interface AdapterLayer {
  /** Plain LoRA/DoRA modules: all targets of a LORA adapter, the attention targets of a MIXLORA one. */
  lora: Partial<Record<ProjName, LoraParams>>;
  moe: MoeLayer | null;
}

/** Where a LoRA/DoRA module sits: its layer and projection, and its expert count when stacked. */
export interface ModuleKey {
  layer: number;
  proj: ProjName;
  /** E for MixLoRA experts (tensors stacked on a first dimension), null for a plain module. */
  experts: number | null;
}

/** One trainable tensor's place in the tree. */
export type ParamKey = { part: 'router'; layer: number } | (ModuleKey & { part: LoraPart });

/** The stable name of a parameter (checkpoints use it): layers.{L}.{proj}[.experts].{lora_A | lora_B |
 * lora_magnitude_vector}, or layers.{L}.moe_gate. */
export function paramName(k: ParamKey): string {
  if (k.part === 'router') return `layers.${k.layer}.moe_gate`;
  const part = k.part === 'magnitude' ? 'lora_magnitude_vector' : k.part;
  return `layers.${k.layer}.${k.proj}${k.experts === null ? '' : '.experts'}.${part}`;
}

/** How buildAdapterLayers obtains each tensor, given its key and shape. A DoRA magnitude also gets its
 * module's A, B and scale (its default is ‖W + s·B A‖ per row). */
export interface ParamSource {
  router(layer: number, shape: number[]): Tensor;
  A(key: ModuleKey, shape: number[], settings: LoraSettings): Tensor;
  B(key: ModuleKey, shape: number[], settings: LoraSettings): Tensor;
  magnitude(key: ModuleKey, shape: number[], module: { A: Tensor; B: Tensor; scale: number }): Tensor;
}

/** The parameter tree of adapter config `c` over a model. Per layer, in this order: the plain targets
 * (A, B, magnitude), the router, the expert targets; fresh initialisation depends on that order. */
export function buildAdapterLayers(c: AdapterConfig, model: ModelConfig, source: ParamSource): AdapterLayer[] {
  checkFitsModel(c, model);
  return Array.from({ length: model.numLayers }, (_, layer) => {
    const module = (proj: ProjName, s: LoraSettings, experts: number | null): LoraParams => {
      const key: ModuleKey = { layer, proj, experts };
      const [out, inp] = projectionShape(model, proj);
      const lead = experts === null ? [] : [experts];
      const A = source.A(key, [...lead, s.r, inp], s);
      const B = source.B(key, [...lead, out, s.r], s);
      const scale = scaling(s);
      const magnitude = s.useDora ? source.magnitude(key, [...lead, out], { A, B, scale }) : null;
      return { A, B, magnitude, settings: s, scale };
    };
    const l: AdapterLayer = { lora: {}, moe: null };
    for (const p of plainTargets(c)) l.lora[p] = module(p, c.lora, null);
    if (c.moe) {
      const router = source.router(layer, [c.moe.numExperts, model.hiddenSize]);
      const experts: Partial<Record<MlpProj, LoraParams>> = {};
      for (const p of expertTargets(c)) experts[p] = module(p, c.moe.expert, c.moe.numExperts);
      l.moe = { router, experts, settings: c.moe };
    }
    return l;
  });
}

/** Targets must be projections the model has (Phi-3 has qkv_proj and gate_up_proj instead of q/k/v and
 * gate/up); MixLoRA experts must use the model's activation. */
function checkFitsModel(c: AdapterConfig, model: ModelConfig): void {
  const has = projectionsOf(model);
  const missing = c.targetModules.filter((p) => !has.includes(p));
  if (missing.length > 0)
    throw new UserError(
      `adapter target_modules names ${missing.join(', ')}, which this ${model.architecture} model does not have (its projections: ${has.join(', ')})`,
    );
  const act = c.moe?.actFn ?? null;
  if (act !== null && act !== model.hiddenAct)
    throw new UserError(
      `adapter act_fn '${act}' differs from this ${model.architecture} model's activation '${model.hiddenAct}' (the experts share the base model's FFN)`,
    );
}

function* moduleParams(key: ModuleKey, m: LoraParams): Generator<[ParamKey, Tensor]> {
  yield [{ ...key, part: 'lora_A' }, m.A];
  yield [{ ...key, part: 'lora_B' }, m.B];
  if (m.magnitude) yield [{ ...key, part: 'magnitude' }, m.magnitude];
}

/** Every trainable tensor with its key, in the order buildAdapterLayers creates them (the optimizer's
 * parameter order). */
export function* adapterParams(layers: AdapterLayer[]): Generator<[ParamKey, Tensor]> {
  for (const [layer, l] of layers.entries()) {
    for (const [proj, m] of Object.entries(l.lora) as [ProjName, LoraParams][])
      yield* moduleParams({ layer, proj, experts: null }, m);
    if (!l.moe) continue;
    yield [{ part: 'router', layer }, l.moe.router];
    const E = l.moe.settings.numExperts;
    for (const [proj, m] of Object.entries(l.moe.experts) as [MlpProj, LoraParams][])
      yield* moduleParams({ layer, proj, experts: E }, m);
  }
}

/** Expert e of a stacked module, as views (gradients reach the stacked tensors). */
export function expertParams(s: LoraParams, e: number): LoraParams {
  return {
    A: s.A.select(0, e),
    B: s.B.select(0, e),
    magnitude: s.magnitude ? s.magnitude.select(0, e) : null,
    settings: s.settings,
    scale: s.scale,
    frozenScale: s.frozenScale ? s.frozenScale.select(0, e) : null,
  };
}

/** Which projections get plain LoRA and which become experts. */
export function plainTargets(c: AdapterConfig): ProjName[] {
  return c.moe ? c.targetModules.filter((p) => !isMlpProj(p)) : c.targetModules;
}
export function expertTargets(c: AdapterConfig): MlpProj[] {
  return c.moe ? (c.targetModules.filter(isMlpProj) as MlpProj[]) : [];
}

/** A: kaiming-uniform with a = √5 (bound 1/√in), or normal(0, 1/r); B = 0. */
function initA(shape: number[], s: LoraSettings, device: Device): Tensor {
  const inFeatures = shape[shape.length - 1]!;
  if (s.init === 'gaussian') return randn(shape, { device }).mul_(1 / s.r);
  const bound = 1 / Math.sqrt(inFeatures);
  return rand(shape, { device })
    .mul_(2 * bound)
    .add_(-bound);
}

/** Fresh parameters (B = 0, so the adapter starts as the identity), from the seeded generator. */
export function initLayers(
  c: AdapterConfig,
  model: ModelConfig,
  /** Runs fn on a projection's frozen weight (in place for the call: a sharded base gathers its layer). */
  withBaseWeight: <T>(layer: number, p: ProjName, fn: (w: FrozenWeight) => T) => T,
  device: Device,
): AdapterLayer[] {
  const routerInitRange = c.moe?.routerInitRange ?? 0;
  return tidy(() =>
    noGrad(() =>
      buildAdapterLayers(c, model, {
        router: (_layer, shape) => randn(shape, { device }).mul_(routerInitRange),
        A: (_key, shape, s) => initA(shape, s, device),
        B: (_key, shape) => zeros(shape, { device }),
        magnitude: (key, shape, m) =>
          withBaseWeight(key.layer, key.proj, (W) => {
            if (key.experts === null) return doraWeightNorm(W, m.A, m.B, m.scale); // [out]
            // B = 0: every expert starts at ‖W‖.
            return doraWeightNorm(W, m.A.select(0, 0), m.B.select(0, 0), m.scale)
              .unsqueeze(0)
              .expand(key.experts, shape[1]!)
              .contiguous(); // [E, out]
          }),
      }),
    ),
  );
}

/** How many numbers an adapter of config `c` holds for model `mc` (DoRA magnitudes included). */
export function adapterElementCount(c: AdapterConfig, mc: ModelConfig): number {
  const lora = (p: ProjName, s: LoraSettings) => {
    const [out, inp] = projectionShape(mc, p);
    return s.r * inp + out * s.r + (s.useDora ? out : 0);
  };
  let perLayer = 0;
  for (const p of plainTargets(c)) perLayer += lora(p, c.lora);
  if (c.moe) {
    perLayer += c.moe.numExperts * mc.hiddenSize;
    for (const p of expertTargets(c)) perLayer += c.moe.numExperts * lora(p, c.moe.expert);
  }
  return perLayer * mc.numLayers;
}
