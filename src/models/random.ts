// Randomly initialised models of a given shape, for benchmarks and tests (no checkpoint needed).
import { noGrad } from '../tensor/autograd.js';
import { ones, randn } from '../tensor/create.js';
import { manualSeed } from '../tensor/runtime.js';
import type { DType } from '../tensor/dtype.js';
import type { Device } from '../tensor/tensor.js';
import type { ModelConfig } from './config.js';
import { llamaFamilyFields } from './family-config.js';
import { CausalLM } from './causal-lm.js';
import type { QuantFormat } from '../quant/format.js';
import { frozenForm, isProjectionWeight, structureWeights, weightSpecs, type FrozenWeight } from './weights.js';

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

/** Weights ~ N(0, 0.02²), norms 1, from the seeded generator; with `quantize`, the projections are
 * quantised one at a time as they are drawn (in float32, so as not to depend on `dtype`). `computeDType`: the
 * model's activations' dtype (default `dtype`; float32 over bfloat16 weights, see tensor/compute-mode.ts). */
export function randomModel(
  config: ModelConfig,
  opts: { seed: number; dtype?: DType; computeDType?: DType; device?: Device; quantize?: QuantFormat | null },
): CausalLM {
  const dtype = opts.dtype ?? 'float32';
  const device = opts.device ?? 'cpu';
  manualSeed(opts.seed);
  const byName = new Map<string, FrozenWeight>();
  noGrad(() => {
    for (const s of weightSpecs(config)) {
      const isNorm = s.shape.length === 1 && s.name.endsWith('norm.weight');
      const drawIn = opts.quantize && isProjectionWeight(s.name, s.shape) ? 'float32' : dtype;
      const t = isNorm ? ones(s.shape, { dtype, device }) : randn(s.shape, { dtype: drawIn, device }).mul_(0.02);
      byName.set(s.name, frozenForm(s.name, t.keep(), opts.quantize));
    }
  });
  return new CausalLM(
    config,
    structureWeights(config, (n) => byName.get(n)!),
    opts.computeDType ?? dtype,
    device,
  );
}
