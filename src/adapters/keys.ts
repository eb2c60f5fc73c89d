// Tensor names in adapter files: HF PEFT's for LORA adapters, the reference tools' for MIXLORA ones
// (docs/design.md §9.2), and the legacy m-LoRA names that can be converted.
import { projectionPrefix, type ProjName } from '../models/weights.js';
import type { AdapterConfig } from './config.js';
import type { MlpProj } from './params.js';

export type LoraPart = 'lora_A' | 'lora_B' | 'magnitude';

function suffix(part: LoraPart): string {
  return part === 'magnitude' ? 'lora_magnitude_vector' : `${part}.weight`;
}

/** Key of a plain LoRA/DoRA module. */
export function plainKey(c: AdapterConfig, layer: number, p: ProjName, part: LoraPart): string {
  if (c.peftType === 'LORA') return `base_model.model.${projectionPrefix(layer, p)}.${suffix(part)}`;
  return `mixlora.layers.${layer}.self_attn.${p}.${suffix(part)}`;
}

export function routerKey(layer: number): string {
  return `mixlora.layers.${layer}.mlp.moe_gate.weight`;
}

export function expertKey(layer: number, p: ProjName, expert: number, part: LoraPart): string {
  return `mixlora.layers.${layer}.mlp.${p}.experts.${expert}.${suffix(part)}`;
}

/** Some writers (older HF PEFT) store magnitudes with a ".weight" suffix. */
export function alternativeKey(key: string): string | null {
  return key.endsWith('.lora_magnitude_vector') ? `${key}.weight` : null;
}

const LEGACY_PROJ: Record<string, MlpProj> = { w1_proj: 'gate_proj', w2_proj: 'down_proj', w3_proj: 'up_proj' };

/** Legacy m-LoRA ≤ 0.3 / early mixlora package adapters ("routing_strategy": "mixtral") in today's
 * config keys and tensor names. Returns null when the config is not legacy. */
export function modernizeLegacy(
  config: Record<string, unknown>,
  keys: string[],
): { config: Record<string, unknown>; rename: Map<string, string> } | null {
  if (config.peft_type !== 'MIXLORA' || config.routing_strategy !== 'mixtral') return null;
  const targets = config.target_modules;
  const names = Array.isArray(targets)
    ? targets
    : targets && typeof targets === 'object'
      ? Object.entries(targets)
          .filter(([, v]) => v)
          .map(([k]) => k)
      : [];
  const modernTargets = [...new Set(names.map((t) => LEGACY_PROJ[String(t)] ?? String(t)))];
  const rename = new Map<string, string>();
  for (const k of keys) {
    let m = /^mixlora\.layers\.(\d+)\.gate\.weight$/.exec(k);
    if (m) {
      rename.set(k, routerKey(Number(m[1])));
      continue;
    }
    m = /^mixlora\.layers\.(\d+)\.experts\.(\d+)\.(\w+)\.(lora_A|lora_B)\.weight$/.exec(k);
    if (m) {
      const proj = LEGACY_PROJ[m[3]!] ?? (m[3] as MlpProj);
      rename.set(k, expertKey(Number(m[1]), proj, Number(m[2]), m[4] as LoraPart));
    }
  }
  return { config: { ...config, routing_strategy: 'mixlora', target_modules: modernTargets }, rename };
}
