// Several adapters over one frozen model in one batch: rows are grouped in contiguous ranges, each
// range says which adapter (or none) it uses. The frozen projections run once over all rows; each
// adapter adds its deltas on its own rows (as PEFT's mixed batches and MoE-PEFT's batch configs do).
// Router outputs are recorded per adapter for the load-balance loss and the expert-load statistics.
import { isGradEnabled } from '../tensor/autograd.js';
import { tensor } from '../tensor/create.js';
import { cat } from '../tensor/ops.js';
import { frozenLinear } from '../models/frozen-linear.js';
import type { Tensor } from '../tensor/tensor.js';
import type { RouterOutput } from './routing.js';
import type { RowSegments } from '../nn/mask.js';
import type { Activation } from '../models/config.js';
import { frozenGateUp, gated, gatedMlp, type ForwardHooks } from '../models/hooks.js';
import { splitGateUp } from '../models/phi3.js';
import { linearOf, type LayerWeights, type Linear, type ProjName } from '../models/weights.js';
import type { Adapter } from './adapter.js';
import { applyLora } from './lora.js';
import { moeForward } from './moe.js';
import type { AdapterStack, AdapterStackCache } from './adapter-stack.js';
import { stackedMlp, stackedProject } from './stacked-forward.js';

/** The most tokens a pass may have to run stacked (a decode step's rows, a short prompt): beyond, the
 * products of many rows run range by range at the libraries' speed. */
export const STACKED_MAX_TOKENS = 64;

export interface RowRange {
  start: number;
  count: number;
  adapter: Adapter | null;
}

/** Which rows use which adapter: contiguous ranges covering the batch in order, or every row of any
 * batch one adapter (or none). */
export type RowAssignment = RowRange[] | { every: Adapter | null };

/** One MixLoRA layer's router output for one adapter's real tokens. */
export interface RouterRecord extends RouterOutput {
  layer: number;
}

export interface BatchOptions {
  training: boolean;
  /** false: the per-expert path (tests, benchmarks). */
  efficient?: boolean;
  /** What to keep of the routers' output: tensors for the load-balance loss ('loss', the default in
   * training), expert counts per layer for load statistics ('counts'), or nothing ('none'). */
  record?: 'loss' | 'counts' | 'none';
  /** Inference only: where the stacked modules of several adapters are kept between passes. With it, a
   * pass of at most STACKED_MAX_TOKENS tokens runs its adapters' modules stacked (adapter-stack.ts; see
   * stackFor) instead of range by range. */
  stacks?: AdapterStackCache;
}

export class AdapterBatch implements ForwardHooks {
  /** Router tensors per adapter (record 'loss'), in layer order of each pass. */
  readonly routing = new Map<Adapter, RouterRecord[]>();
  /** Routed slots per adapter, layer and expert, summed over passes (record 'counts'). */
  readonly expertCounts = new Map<Adapter, number[][]>();
  /** The fixed ranges, or null when every row uses `every`. */
  private readonly fixed: RowRange[] | null;
  private readonly every: Adapter | null = null;
  private readonly efficient: boolean;
  private readonly record: 'loss' | 'counts' | 'none';
  private readonly validCache = new Map<number, Tensor | null>();
  private tokenMask: Tensor | null = null;
  /** Per token, its position within its example, when rows pack several examples ([B, T] int64). */
  private examplePositions: Tensor | null = null;
  private readonly positionCache = new Map<number, Tensor>();
  /** Per pass (token count): each token's plain-projection member in the stack, [n] int64. */
  private readonly memberCache = new Map<number, Tensor>();

  constructor(
    rows: RowAssignment,
    readonly opts: BatchOptions,
  ) {
    this.efficient = opts.efficient ?? true;
    this.record = opts.record ?? (opts.training ? 'loss' : 'none');
    if (!Array.isArray(rows)) {
      this.fixed = null;
      this.every = rows.every;
      return;
    }
    let next = 0;
    for (const range of rows) {
      if (range.start !== next || range.count <= 0)
        throw new RangeError('AdapterBatch: row ranges must be contiguous, in order, and non-empty');
      next += range.count;
    }
    this.fixed = rows;
  }

  /** Every row of every pass uses the same adapter (or none). */
  static all(adapter: Adapter | null, opts: BatchOptions): AdapterBatch {
    return new AdapterBatch({ every: adapter }, opts);
  }

  beginForward(tokenMask: Tensor | null, packed: RowSegments | null = null): void {
    this.tokenMask?.dispose();
    this.tokenMask = tokenMask ? tokenMask.detach().keep() : null;
    this.examplePositions?.dispose();
    this.examplePositions = packed ? packed.positions.detach().keep() : null;
    for (const t of this.positionCache.values()) t.dispose();
    this.positionCache.clear();
    for (const t of this.validCache.values()) t?.dispose();
    this.validCache.clear();
    for (const t of this.memberCache.values()) t.dispose();
    this.memberCache.clear();
  }

  project(layer: number, name: ProjName, x: Tensor, lin: Linear): Tensor {
    const base = frozenLinear(x, lin); // [B, T, out]
    const ranges = this.rangesOf(x.size(0));
    if (!ranges.some((range) => range.adapter?.lora(layer, name))) return base;
    const stack = this.stackFor(ranges, x.size(0) * x.size(1));
    if (stack) {
      const stacked = stack.projection(layer, name, lin);
      return stacked ? stackedProject(stacked, x, base, this.members(stack, ranges, x.size(1), x.device), lin) : base;
    }
    return this.perRange(ranges, (range) => {
      const p = range.adapter?.lora(layer, name);
      const b = this.rows(base, range);
      return p ? applyLora(this.rows(x, range), b, p, lin, this.opts.training) : b;
    });
  }

  mlp(layer: number, x: Tensor, w: LayerWeights, act: Activation): Tensor {
    const ranges = this.rangesOf(x.size(0));
    if (!ranges.some((range) => range.adapter?.layers[layer]?.moe)) return gatedMlp(this, layer, x, w, act);
    const [, T, H] = x.shape as [number, number, number];
    const stack = w.proj.gate_up_proj ? null : this.stackFor(ranges, x.size(0) * T);
    if (stack) {
      const { out, routing } = stackedMlp(
        stack,
        layer,
        x,
        w,
        act,
        ranges,
        (range) => this.valid(range),
        this.record !== 'none',
      );
      for (const record of routing)
        this.keepRouting(record.adapter, { layer, logits: record.logits, probs: record.probs, counts: record.counts });
      return out;
    }
    // The frozen gate/up projections once for every row: MixLoRA experts and plain adapters share them.
    const frozen = frozenGateUp(x, w); // [B, T, I] each, Phi-3's fused [B, T, 2I]
    const down = linearOf(w, 'down_proj');
    const outs = new Map<RowRange, Tensor>(); // each range's block output [b, T, H]
    const plain: { range: RowRange; h: Tensor }[] = []; // ranges without experts: their gated hidden states
    for (const range of ranges) {
      const xr = this.rows(x, range); // [b, T, H]
      const moe = range.adapter?.layers[layer]?.moe;
      if (moe) {
        const I = frozen.gate.size(2);
        const b = xr.size(0);
        const flat = (t: Tensor, width: number) => this.rows(t, range).reshape(b * T, width);
        const res = moeForward(moe, w, {
          x: xr.reshape(b * T, H),
          rows: b,
          len: T,
          valid: this.valid(range),
          positions: this.positions(range),
          base: {
            gate: flat(frozen.gate, I),
            up: flat(frozen.up, I),
            fused: frozen.fused ? flat(frozen.fused, 2 * I) : null,
          },
          act,
          training: this.opts.training,
          efficient: this.efficient,
        });
        this.keepRouting(range.adapter!, { layer, logits: res.logits, probs: res.probs, counts: res.counts });
        outs.set(range, res.out.reshape(b, T, H));
        continue;
      }
      const adapt = (name: ProjName, base: Tensor) => {
        const p = range.adapter?.lora(layer, name);
        return p ? applyLora(xr, base, p, linearOf(w, name), this.opts.training) : base;
      };
      const [gate, up] = frozen.fused
        ? splitGateUp(adapt('gate_up_proj', this.rows(frozen.fused, range))) // [b, T, I] each
        : [adapt('gate_proj', this.rows(frozen.gate, range)), adapt('up_proj', this.rows(frozen.up, range))];
      plain.push({ range, h: gated(act, gate, up) }); // [b, T, I]
    }
    if (plain.length > 0) {
      // The frozen down projection once for all of them (one pass over its weight, not one per range).
      const hs =
        plain.length === 1
          ? plain[0]!.h
          : cat(
              plain.map((p) => p.h),
              0,
            ); // [Σb, T, I]
      const all = frozenLinear(hs, down); // [Σb, T, H]
      // split, not narrow: in training, its backward is one concatenation.
      const downs =
        plain.length === 1
          ? [all]
          : all.split(
              plain.map((p) => p.range.count),
              0,
            );
      plain.forEach(({ range, h }, i) => {
        const pd = range.adapter?.lora(layer, 'down_proj');
        outs.set(range, pd ? applyLora(h, downs[i]!, pd, down, this.opts.training) : downs[i]!);
      });
    }
    return this.perRange(ranges, (range) => outs.get(range)!);
  }

  /**
   * How this pass runs its adapters: the stack of its adapters when the stacked executor applies, else
   * null (range by range: applyLora per range, and moeForward's sparse experts for MixLoRA ranges).
   *
   * | training or grad mode on                 | range by range (autograd)                          |
   * | no stack cache given (eval, perplexity)  | range by range                                     |
   * | more than STACKED_MAX_TOKENS tokens      | range by range (prefill: products of many rows)    |
   * | only base-model rows                     | range by range (nothing to adapt)                  |
   * | otherwise (decode steps of the engine)   | stacked: every row's slots through its own member, |
   * |                                          | one adapter or several (stacked-forward.ts)        |
   *
   * (mlp() also keeps Phi-3's fused gate_up_proj range by range: the stacked block has no split of it.)
   */
  private stackFor(ranges: RowRange[], tokens: number): AdapterStack | null {
    const cache = this.opts.stacks;
    if (!cache || this.opts.training || isGradEnabled() || tokens > STACKED_MAX_TOKENS) return null;
    const adapters = [...new Set(ranges.map((range) => range.adapter))].filter((a): a is Adapter => a !== null);
    return adapters.length >= 1 ? cache.get(adapters) : null;
  }

  /** Each token's plain-projection member, [B·T] int64 (rows of T tokens). */
  private members(stack: AdapterStack, ranges: RowRange[], T: number, device: Tensor['device']): Tensor {
    const n = ranges.reduce((sum, range) => sum + range.count, 0) * T;
    let ids = this.memberCache.get(n);
    if (!ids) {
      const host = new Int32Array(n);
      for (const range of ranges)
        host.fill(stack.adapterMember(range.adapter), range.start * T, (range.start + range.count) * T);
      ids = tensor(host, { dtype: 'int64', device }).keep();
      this.memberCache.set(n, ids);
    }
    return ids;
  }

  /** The ranges of a pass over `batchRows` rows. */
  private rangesOf(batchRows: number): RowRange[] {
    return this.fixed ?? [{ start: 0, count: batchRows, adapter: this.every }];
  }

  private rows(t: Tensor, range: RowRange): Tensor {
    return range.start === 0 && range.count === t.size(0) ? t : t.narrow(0, range.start, range.count);
  }

  private perRange(ranges: RowRange[], f: (range: RowRange) => Tensor): Tensor {
    const parts = ranges.map(f);
    return parts.length === 1 ? parts[0]! : cat(parts, 0);
  }

  /** [rows·T] bool of a range's real tokens, or null when there is no padding. */
  private valid(range: RowRange): Tensor | null {
    const mask = this.tokenMask;
    if (!mask) return null;
    if (!this.validCache.has(range.start))
      this.validCache.set(range.start, this.rows(mask, range).ne(0).flatten().keep());
    return this.validCache.get(range.start)!;
  }

  /** [rows·T] int64: each token's position within its example, or null when no row packs several. */
  private positions(range: RowRange): Tensor | null {
    const pos = this.examplePositions;
    if (!pos) return null;
    if (!this.positionCache.has(range.start))
      this.positionCache.set(range.start, this.rows(pos, range).flatten().keep());
    return this.positionCache.get(range.start)!;
  }

  // Records outlive the layer's scope: they are kept until dispose().
  private keepRouting(adapter: Adapter, rec: RouterRecord): void {
    if (this.record === 'counts') {
      const perLayer =
        this.expertCounts.get(adapter) ??
        adapter.layers.map(() => Array<number>(adapter.config.moe!.numExperts).fill(0));
      rec.counts.toNumbers().forEach((c, e) => {
        perLayer[rec.layer]![e]! += c;
      });
      this.expertCounts.set(adapter, perLayer);
    }
    if (this.record !== 'loss') return;
    for (const t of [rec.logits, rec.probs, rec.counts]) t.keep();
    const list = this.routing.get(adapter);
    if (list) list.push(rec);
    else this.routing.set(adapter, [rec]);
  }

  /** Frees the router records and cached masks (call after the loss is built and backward ran). */
  dispose(): void {
    for (const recs of this.routing.values())
      for (const record of recs) for (const t of [record.logits, record.probs, record.counts]) t.dispose();
    this.routing.clear();
    for (const t of this.validCache.values()) t?.dispose();
    this.validCache.clear();
    for (const t of this.memberCache.values()) t.dispose();
    this.memberCache.clear();
    this.tokenMask?.dispose();
    this.tokenMask = null;
    this.examplePositions?.dispose();
    this.examplePositions = null;
    for (const t of this.positionCache.values()) t.dispose();
    this.positionCache.clear();
  }
}
