// Randomly initialised models of a given shape, for benchmarks and tests (no checkpoint needed).
import { noGrad } from '../tensor/autograd.js';
import { ones, randn } from '../tensor/create.js';
import { manualSeed } from '../tensor/runtime.js';
import type { DType } from '../tensor/dtype.js';
import type { Device } from '../tensor/tensor.js';
import type { ModelConfig } from './config.js';
import { llamaFamilyFields } from './family-config.js';
import type { Group } from '../distributed/group.js';
import { shardedCausalLM } from './sharded-base.js';
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
 * model's activations' dtype (default `dtype`; float32 over bfloat16 weights, see tensor/compute-mode.ts).
 * `shard`: each rank keeps its share of each unit as it is drawn (shard_base; the same draws as unsharded). */
export function randomModel(
  config: ModelConfig,
  opts: {
    seed: number;
    dtype?: DType;
    computeDType?: DType;
    device?: Device;
    quantize?: QuantFormat | null;
    shard?: Group | null;
  },
): CausalLM {
  const dtype = opts.dtype ?? 'float32';
  const device = opts.device ?? 'cpu';
  const computeDType = opts.computeDType ?? dtype;
  manualSeed(opts.seed);
  const draws = randomWeights(config, dtype, device, opts.quantize ?? null);
  if (opts.shard)
    return shardedCausalLM(opts.shard, config, computeDType, device, {
      names: weightSpecs(config).map((s) => s.name),
      stream: draws,
    });
  const byName = new Map<string, FrozenWeight>(draws);
  return new CausalLM(
    config,
    structureWeights(config, (n) => byName.get(n)!),
    computeDType,
    device,
  );
}

function* randomWeights(
  config: ModelConfig,
  dtype: DType,
  device: Device,
  quantize: QuantFormat | null,
): Generator<[string, FrozenWeight]> {
  for (const s of weightSpecs(config)) {
    const isNorm = s.shape.length === 1 && s.name.endsWith('norm.weight');
    const drawIn = quantize && isProjectionWeight(s.name, s.shape) ? 'float32' : dtype;
    const t = noGrad(() =>
      isNorm ? ones(s.shape, { dtype, device }) : randn(s.shape, { dtype: drawIn, device }).mul_(0.02),
    );
    yield [s.name, frozenForm(s.name, t.keep(), quantize)];
  }
}
