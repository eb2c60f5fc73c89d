// An adapter: its config and its parameter tree over a frozen base model. Built fresh (B = 0) or from
// saved weights; several can be attached to one base model at once (see batch.ts).
import type { Tensor } from '../tensor/tensor.js';
import type { CausalLM } from '../models/causal-lm.js';
import { linearOf, type ProjName } from '../models/weights.js';
import { isMoe, withModelActivation, type AdapterConfig } from './config.js';
import { adapterParams, initLayers, paramName, type AdapterLayer } from './params.js';
import type { LoraParams } from './lora.js';
import { freezeDoraScales, thawDoraScales } from './frozen.js';

export interface NamedParameter {
  name: string;
  tensor: Tensor;
  /** The decoder layer it belongs to. */
  layer: number;
}

export class Adapter {
  constructor(
    readonly name: string,
    readonly config: AdapterConfig,
    readonly layers: AdapterLayer[],
  ) {}

  /** A fresh adapter for `model` (LoRA B = 0: the model is unchanged until trained). */
  static create(name: string, given: AdapterConfig, model: CausalLM): Adapter {
    const config = withModelActivation(given, model.config.hiddenAct);
    return new Adapter(
      name,
      config,
      initLayers(
        config,
        model.config,
        (l, p, fn) => model.withWeights(l, () => fn(linearOf(model.weights.layers[l]!, p).weight)),
        model.device,
      ),
    );
  }

  get isMoe(): boolean {
    return isMoe(this.config);
  }

  lora(layer: number, proj: ProjName): LoraParams | null {
    return this.layers[layer]?.lora[proj] ?? null;
  }

  /** Every trainable tensor with a stable name (stacked experts under one name per module). */
  parameters(): NamedParameter[] {
    return [...adapterParams(this.layers)].map(([key, tensor]) => ({ name: paramName(key), tensor, layer: key.layer }));
  }

  /** Number of trainable scalars (the paper's "# Params"). */
  parameterCount(): number {
    return this.parameters().reduce((n, p) => n + p.tensor.numel, 0);
  }

  requiresGrad_(on = true): this {
    // Trainable again: what was precomputed from the parameters would go stale.
    if (on) thawDoraScales(this.layers);
    for (const p of this.parameters()) p.tensor.requiresGrad_(on);
    return this;
  }

  /** For an adapter whose parameters will not change again (serving, generating) over `model`:
   * precomputes DoRA's scales so that inference forwards skip the weight norms (frozen.ts). */
  freezeForInference(model: CausalLM): this {
    freezeDoraScales(this.layers, (l, p) => linearOf(model.weights.layers[l]!, p).weight);
    return this;
  }

  /** True once dispose() ran (its tensors are gone). */
  get isDisposed(): boolean {
    return this.disposed;
  }
  private disposed = false;

  dispose(): void {
    this.disposed = true;
    thawDoraScales(this.layers);
    for (const p of this.parameters()) p.tensor.dispose();
  }
}
