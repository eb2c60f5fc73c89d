// The optimizer step in the backward pass (torchtune's optimizer_in_bwd; LOMO, Lv et al. 2023): when one
// micro-batch is the whole optimizer step and nothing is clipped, each decoder layer's adapter parameters
// can be updated as soon as the backward pass has finished that layer, and their gradients freed before
// the layers below run. With recompute (step.ts) at most one layer's gradients are then held, instead of
// the whole adapter's. Each parameter's update is the one a step after the pass would make: a layer's
// parameters take no part in the backward of the layers below it.
import type { Adapter } from '../adapters/adapter.js';
import type { Optimizer } from '../optim/optimizer.js';
import { native } from '../tensor/native.js';
import type { MicroBatch } from './step.js';

/** Starts `optimizer`'s step (its lr already set) and has `m`'s pass apply it layer by layer. */
export function attachStepInBackward(adapter: Adapter, optimizer: Optimizer, m: MicroBatch): void {
  const named = adapter.parameters();
  const byLayer = new Map<number, number[]>();
  named.forEach((p, i) => byLayer.set(p.layer, [...(byLayer.get(p.layer) ?? []), i]));
  optimizer.beginStep();
  m.afterLayerBackward = (layer) => {
    const indices = byLayer.get(layer);
    if (!indices) return;
    optimizer.update(indices);
    native.zeroGrad(indices.map((i) => named[i]!.tensor.id));
  };
}
