// Randomly initialised models of a given shape, for benchmarks and tests (no checkpoint needed).
import { noGrad } from '../tensor/autograd.js';
import { ones, randn } from '../tensor/create.js';
import { manualSeed } from '../tensor/runtime.js';
import type { DType } from '../tensor/dtype.js';
import type { Device, Tensor } from '../tensor/tensor.js';
import type { ModelConfig } from './config.js';
import { llamaFamilyFields } from './family-config.js';
import { CausalLM } from './llama.js';
import { structureWeights, weightSpecs } from './weights.js';

/** A LLaMA-shaped config with the usual defaults. */
export function llamaConfig(o: {
  vocab: number;
  hidden: number;
  intermediate: number;
  layers: number;
  heads: number;
  kvHeads?: number;
}): ModelConfig {
  return {
    ...llamaFamilyFields(o.hidden / o.heads),
    architecture: 'llama',
    vocabSize: o.vocab,
    hiddenSize: o.hidden,
    intermediateSize: o.intermediate,
    numLayers: o.layers,
    numHeads: o.heads,
    numKvHeads: o.kvHeads ?? o.heads,
    headDim: o.hidden / o.heads,
    rmsNormEps: 1e-5,
    ropeTheta: 10000,
    ropeScaling: null,
    maxPositionEmbeddings: 4096,
    tieWordEmbeddings: false,
    qkvBias: false,
    oBias: false,
    mlpBias: false,
    slidingWindow: null,
    bosTokenId: 1,
    eosTokenIds: [2],
    padTokenId: null,
  };
}

/** Weights ~ N(0, 0.02²), norms 1, from the seeded generator. */
export function randomModel(config: ModelConfig, opts: { seed: number; dtype?: DType; device?: Device }): CausalLM {
  const dtype = opts.dtype ?? 'float32';
  const device = opts.device ?? 'cpu';
  manualSeed(opts.seed);
  const byName = new Map<string, Tensor>();
  noGrad(() => {
    for (const s of weightSpecs(config)) {
      const isNorm = s.shape.length === 1 && s.name.endsWith('norm.weight');
      const t = isNorm ? ones(s.shape, { dtype, device }) : randn(s.shape, { dtype, device }).mul_(0.02);
      byName.set(s.name, t.keep());
    }
  });
  return new CausalLM(
    config,
    structureWeights(config, (n) => byName.get(n)!),
    dtype,
    device,
  );
}
