// What inference can precompute for an adapter whose parameters no longer change (a served or
// generating adapter): DoRA's scale m / ‖W + s·B A‖, which otherwise costs a weight-sized sum and norm
// per module on every forward. The scales belong to the adapter: they go when it is disposed or made
// trainable again (Adapter.requiresGrad_), and applyLora ignores them in training and under autograd.
import { noGrad } from '../tensor/autograd.js';
import { stack } from '../tensor/ops.js';
import { tidy } from '../tensor/scope.js';
import type { FrozenWeight, ProjName } from '../models/weights.js';
import { doraScale, type LoraParams } from './lora.js';
import { expertParams, type AdapterLayer } from './params.js';

/** Every LoRA/DoRA module of the layers with its base projection. */
function* modules(layers: AdapterLayer[]): Generator<[number, ProjName, LoraParams]> {
  for (const [layer, l] of layers.entries()) {
    for (const [proj, m] of Object.entries(l.lora) as [ProjName, LoraParams][]) yield [layer, proj, m];
    for (const [proj, m] of Object.entries(l.moe?.experts ?? {}) as [ProjName, LoraParams][]) yield [layer, proj, m];
  }
}

/** Stores each DoRA module's scale (stacked experts: computed expert by expert, as the forward would,
 * so outputs are bit-identical). */
export function freezeDoraScales(
  layers: AdapterLayer[],
  baseWeight: (layer: number, p: ProjName) => FrozenWeight,
): void {
  for (const [layer, proj, m] of modules(layers)) {
    if (!m.magnitude || m.frozenScale) continue;
    const W = baseWeight(layer, proj);
    const experts = m.magnitude.ndim === 2 ? m.magnitude.size(0) : null;
    m.frozenScale = noGrad(() =>
      tidy(
        () =>
          experts === null
            ? doraScale(W, m) // [out]
            : stack(
                Array.from({ length: experts }, (_, e) => doraScale(W, expertParams(m, e))),
                0,
              ), // [E, out]
      ).keep(),
    );
  }
}

/** Frees the stored scales: forwards compute them again. */
export function thawDoraScales(layers: AdapterLayer[]): void {
  for (const [, , m] of modules(layers)) {
    m.frozenScale?.dispose();
    m.frozenScale = null;
  }
}
