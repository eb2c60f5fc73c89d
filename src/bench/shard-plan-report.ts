// The text (or JSON) of `mixlora bench --shard-base --plan` for a preset.
import type { DType } from '../tensor/dtype.js';
import type { QuantFormat } from '../quant/format.js';
import { llamaConfig } from '../models/random.js';
import { PRESETS, type PresetName } from './benchmark.js';
import { shardPlan } from './shard-plan.js';

const PLAN_RANKS = [1, 2, 4, 8];

export function printShardPlan(
  preset: PresetName,
  dtype: DType | undefined,
  quantize: QuantFormat | null,
  json: boolean,
): string {
  const p = PRESETS[preset];
  const d = dtype ?? p.dtype;
  const plan = shardPlan(llamaConfig(p), d, quantize, PLAN_RANKS);
  if (json)
    return JSON.stringify({ preset, dtype: d, quantize, whole_bytes: plan.wholeBytes, ranks: plan.rows }) + '\n';
  const gib = (b: number) => `${(b / 2 ** 30).toFixed(2)} GiB`;
  const lines = [
    `shard_base plan: ${preset}, ${d}${quantize ? `, ${quantize} projections` : ''}; the frozen base is ${gib(plan.wholeBytes)} whole (computed from the shapes, nothing allocated)`,
    `${'ranks'.padStart(5)}  ${'held per rank'.padStart(14)}  ${'+ whole at once'.padStart(16)}  ${'= base at its peak'.padStart(19)}`,
    ...plan.rows.map(
      (r) =>
        `${String(r.ranks).padStart(5)}  ${gib(r.perRankBytes).padStart(14)}  ${gib(r.gatheredBytes).padStart(16)}  ${gib(r.peakBytes).padStart(19)}`,
    ),
    'Whole at once: the unit that runs (a decoder layer, the embeddings or the head) and the next, gathered ahead;',
    'activations, adapters and optimizer state come on top.',
  ];
  return lines.join('\n') + '\n';
}
