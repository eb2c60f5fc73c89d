// The trainable tensors of an adapter, per decoder layer: plain LoRA/DoRA modules, and for MixLoRA a
// float32 router and the experts' LoRA weights stacked ([E, r, in], [E, out, r], [E, out]).
import { noGrad } from '../tensor/autograd.js';
import { randn, rand, zeros } from '../tensor/create.js';
import { tidy } from '../tensor/scope.js';
import type { Device, Tensor } from '../tensor/tensor.js';
import type { ModelConfig } from '../models/config.js';
import { projectionShape, type ProjName } from '../models/weights.js';
import { isMlpProj, scaling, type AdapterConfig, type LoraSettings, type MoeSettings } from './config.js';
import { doraWeightNorm, type LoraParams } from './lora.js';

export type MlpProj = 'gate_proj' | 'up_proj' | 'down_proj';

export interface StackedLora {
  /** [E, r, in] */
  A: Tensor;
  /** [E, out, r] */
  B: Tensor;
  /** [E, out], MixDoRA only */
  magnitude: Tensor | null;
  settings: LoraSettings;
  scale: number;
}

export interface MoeLayer {
  /** [E, hidden], float32 */
  router: Tensor;
  experts: Partial<Record<MlpProj, StackedLora>>;
  settings: MoeSettings;
}

export interface AdapterLayer {
  /** Plain LoRA/DoRA modules: all targets of a LORA adapter, the attention targets of a MIXLORA one. */
  lora: Partial<Record<ProjName, LoraParams>>;
  moe: MoeLayer | null;
}

/** Expert e of a stacked module, as views (gradients reach the stacked tensors). */
export function expertParams(s: StackedLora, e: number): LoraParams {
  return {
    A: s.A.select(0, e),
    B: s.B.select(0, e),
    magnitude: s.magnitude ? s.magnitude.select(0, e) : null,
    settings: s.settings,
    scale: s.scale,
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
  baseWeight: (layer: number, p: ProjName) => Tensor,
  device: Device,
): AdapterLayer[] {
  return tidy(() =>
    noGrad(() =>
      Array.from({ length: model.numLayers }, (_, l) => {
        const layer: AdapterLayer = { lora: {}, moe: null };
        for (const p of plainTargets(c)) {
          const [out, inp] = projectionShape(model, p);
          const A = initA([c.lora.r, inp], c.lora, device);
          const B = zeros([out, c.lora.r], { device });
          const scale = scaling(c.lora);
          const magnitude = c.lora.useDora ? doraWeightNorm(baseWeight(l, p), A, B, scale) : null;
          layer.lora[p] = { A, B, magnitude, settings: c.lora, scale };
        }
        if (c.moe) {
          const m = c.moe;
          const E = m.numExperts;
          const router = randn([E, model.hiddenSize], { device }).mul_(m.routerInitRange);
          const experts: Partial<Record<MlpProj, StackedLora>> = {};
          for (const p of expertTargets(c)) {
            const [out, inp] = projectionShape(model, p);
            const A = initA([E, m.expert.r, inp], m.expert, device);
            const B = zeros([E, out, m.expert.r], { device });
            const scale = scaling(m.expert);
            const magnitude = m.expert.useDora
              ? doraWeightNorm(baseWeight(l, p), A.select(0, 0), B.select(0, 0), scale)
                  .unsqueeze(0)
                  .expand(E, out)
                  .contiguous()
              : null;
            experts[p] = { A, B, magnitude, settings: m.expert, scale };
          }
          layer.moe = { router, experts, settings: m };
        }
        return layer;
      }),
    ),
  );
}
