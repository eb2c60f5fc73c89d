// `mixlora bench --shard-base --plan`: what each rank of a shard_base job holds of the frozen base, computed
// from the model's shape alone (nothing allocated): the same units and flat buffers as src/models/sharded-base.ts
// (one buffer per unit and dtype, each rank ceil(numel / W) elements of it), and the most that is whole at once
// in a recomputing step: the unit that runs and the next one, gathered ahead (the head of tied embeddings
// with the embeddings).
import { ITEM_SIZE, type DType } from '../tensor/dtype.js';
import type { QuantFormat } from '../quant/format.js';
import type { ModelConfig } from '../models/config.js';
import { unitOf, type WeightUnit } from '../models/residency.js';
import { isProjectionWeight, weightSpecs } from '../models/weights.js';
import { recomputeOrder } from '../train/step.js';

export interface ShardPlanRow {
  ranks: number;
  /** The frozen base's bytes each rank holds between uses (its shares, the last rank's padding included). */
  perRankBytes: number;
  /** The most that is whole at once beside the rank's shares: the unit that runs and the next, gathered ahead. */
  gatheredBytes: number;
  /** perRankBytes + gatheredBytes: the frozen base's part of a rank's peak. */
  peakBytes: number;
}

export interface ShardPlan {
  wholeBytes: number;
  rows: ShardPlanRow[];
}

/** Elements by dtype of one weight in its frozen form (a quantised projection: codes and float32 scales). */
function frozenParts(shape: number[], dtype: DType, quantize: QuantFormat | null, name: string): [DType, number][] {
  const n = shape.reduce((a, b) => a * b, 1);
  if (!quantize || !isProjectionWeight(name, shape)) return [[dtype, n]];
  if (quantize === 'nf4')
    return [
      ['uint8', Math.ceil(n / 2)],
      ['float32', Math.ceil(n / 64)],
    ];
  return [
    ['int8', n],
    ['float32', shape[0]!],
  ];
}

export function shardPlan(c: ModelConfig, dtype: DType, quantize: QuantFormat | null, ranks: number[]): ShardPlan {
  const units = new Map<WeightUnit, Map<DType, number>>();
  for (const s of weightSpecs(c)) {
    const unit = unitOf(s.name);
    const buffers = units.get(unit) ?? new Map<DType, number>();
    units.set(unit, buffers);
    for (const [d, n] of frozenParts(s.shape, dtype, quantize, s.name)) buffers.set(d, (buffers.get(d) ?? 0) + n);
  }
  const bytesOf = (buffers: Map<DType, number>) => [...buffers].reduce((sum, [d, n]) => sum + n * ITEM_SIZE[d], 0);
  const unitBytes = new Map([...units].map(([u, b]) => [u, bytesOf(b)]));
  // The recomputing step's order (train/step.ts): the embeddings, each layer, the head, each layer backward.
  const bytes = (u: WeightUnit) => unitBytes.get(u)!;
  const order = recomputeOrder(c.numLayers);
  let gathered = 0;
  order.forEach((u, i) => {
    const next = order[i + 1];
    const inUse = u === 'head' && c.tieWordEmbeddings ? bytes('embed') + bytes(u) : bytes(u);
    gathered = Math.max(gathered, inUse + (next === undefined ? 0 : bytes(next)));
  });
  const wholeBytes = [...unitBytes.values()].reduce((a, b) => a + b, 0);
  return {
    wholeBytes,
    rows: ranks.map((W) => {
      let perRank = 0;
      for (const buffers of units.values()) for (const [d, n] of buffers) perRank += Math.ceil(n / W) * ITEM_SIZE[d];
      return { ranks: W, perRankBytes: perRank, gatheredBytes: gathered, peakBytes: perRank + gathered };
    }),
  };
}
