// Several adapters' LoRA/DoRA modules side by side, for inference steps whose rows use different adapters
// (continuous batching in `mixlora serve`). Per projection, lowRankByMember (the shrink and expand ops of
// native/kernels/low_rank_rows.cc) runs each row through its own member's A and B, as Punica's and S-LoRA's
// batched LoRA kernels (BGMV) do: each member's weights are read once, for its rows only, whatever the number of adapters in the step.
//
// Members: for a plain projection (attention), one per adapter; for the feed-forward projections, one per
// expert, a plain adapter's gate/up/down modules being its one expert. Either list ends with "none"
// (rows of the base model, or an adapter without that module), which has no modules.
import { ones } from '../tensor/create.js';
import { noGrad } from '../tensor/autograd.js';
import { stack, type LowRankMembers } from '../tensor/ops.js';
import { tidy } from '../tensor/scope.js';
import type { Tensor } from '../tensor/tensor.js';
import type { Linear, ProjName } from '../models/weights.js';
import type { Adapter } from './adapter.js';
import { doraScale, frozenScale, type LoraParams } from './lora.js';
import { expertParams, type MlpProj } from './params.js';

/** One projection's modules of every member: A[g] [r, in], B[g] [out, r] (float32; the adapter's own
 * tensors when they are float32 already, not copies) and scaling s[g]. */
export interface StackedModule extends LowRankMembers {
  /** [G, out] float32: DoRA's m / ‖W + s·B A‖ per member (1 for LoRA members); null when none is DoRA. */
  scales: Tensor | null;
}

let nextId = 0;
const ids = new WeakMap<Adapter, number>();
/** A stable identity per adapter object (a reloaded adapter of the same name is another one). */
function idOf(adapter: Adapter): number {
  let id = ids.get(adapter);
  if (id === undefined) {
    id = nextId++;
    ids.set(adapter, id);
  }
  return id;
}

/** One projection's member modules (null: the member lacks it); null when no member has it. */
function stackModules(members: (LoraParams | null)[], lin: Linear): StackedModule | null {
  if (members.every((p) => p === null)) return null;
  return noGrad(() =>
    tidy(() => {
      const device = lin.weight.device;
      const f32 = (t: Tensor) => t.to('float32').contiguous().keep();
      const out = lin.weight.shape[0]; // a quantised weight has its shape too
      const scales = members.some((p) => p?.magnitude)
        ? stack(
            members.map((p) =>
              p?.magnitude ? (frozenScale(p, false) ?? doraScale(lin.weight, p)) : ones([out], { device }),
            ),
            0,
          ).keep() // [G, out]
        : null;
      return {
        A: members.map((p) => (p ? f32(p.A) : null)), // [r, in] each
        B: members.map((p) => (p ? f32(p.B) : null)), // [out, r] each
        scaling: members.map((p) => p?.scale ?? 0),
        scales,
      };
    }),
  );
}

/** The stacked modules of a set of adapters, built per (layer, projection) on first use. */
export class AdapterStack {
  /** The adapters, in a fixed order (by identity), whatever order the rows come in. */
  readonly adapters: Adapter[];
  private readonly position = new Map<Adapter, number>();
  /** Each adapter's first member among the feed-forward members (a MixLoRA adapter has numExperts). */
  private readonly expertBase: number[] = [];
  /** Feed-forward members, "none" included. */
  readonly expertMembers: number;
  private readonly modules = new Map<string, StackedModule | null>();

  constructor(adapters: Adapter[]) {
    this.adapters = [...adapters].sort((a, b) => idOf(a) - idOf(b));
    let base = 0;
    this.adapters.forEach((adapter, i) => {
      this.position.set(adapter, i);
      this.expertBase.push(base);
      base += adapter.config.moe?.numExperts ?? 1;
    });
    this.expertMembers = base + 1;
  }

  static keyOf(adapters: Adapter[]): string {
    return adapters
      .map(idOf)
      .sort((a, b) => a - b)
      .join(',');
  }

  /** A row's member for plain projections: its adapter's position, or "none". */
  adapterMember(adapter: Adapter | null): number {
    return adapter ? this.position.get(adapter)! : this.adapters.length;
  }

  /** A row's first feed-forward member: its adapter's (first) expert, or "none". */
  expertMember(adapter: Adapter | null): number {
    return adapter ? this.expertBase[this.position.get(adapter)!]! : this.expertMembers - 1;
  }

  /** Projection `name` of `layer` over the adapters (plain modules); null when none adapts it. */
  projection(layer: number, name: ProjName, lin: Linear): StackedModule | null {
    return this.cached(`p${layer}.${name}`, () =>
      stackModules([...this.adapters.map((a) => a.lora(layer, name)), null], lin),
    );
  }

  /** Feed-forward projection `name` of `layer` over every expert (a plain adapter: its own module). */
  expertProjection(layer: number, name: MlpProj, lin: Linear): StackedModule | null {
    return this.cached(`e${layer}.${name}`, () => {
      const members: (LoraParams | null)[] = [];
      for (const adapter of this.adapters) {
        const moe = adapter.layers[layer]?.moe;
        if (!moe) {
          members.push(adapter.lora(layer, name));
          continue;
        }
        const stacked = moe.experts[name];
        for (let e = 0; e < moe.settings.numExperts; e++) members.push(stacked ? expertParams(stacked, e) : null);
      }
      members.push(null);
      return stackModules(members, lin);
    });
  }

  private cached(key: string, build: () => StackedModule | null): StackedModule | null {
    if (!this.modules.has(key)) this.modules.set(key, build());
    return this.modules.get(key)!;
  }

  dispose(): void {
    for (const m of this.modules.values()) for (const t of [...(m?.A ?? []), ...(m?.B ?? []), m?.scales]) t?.dispose();
    this.modules.clear();
  }
}

/** The stack a serving engine's steps use. Built over every adapter its steps have mixed since it was last
 * cleared (the engine clears it when idle), not over each step's own set: requests come and go every few
 * steps, and an adapter that sits out a step costs nothing there (its rows are absent), while rebuilding
 * (DoRA's stacked scales, the members' lists) whenever the mix changes would cost every time. A step with an
 * adapter not yet in it rebuilds it once; past `maxAdapters`, the stack holds the step's own set only. */
export class AdapterStackCache {
  private current: AdapterStack | null = null;

  constructor(private readonly maxAdapters = 16) {}

  /** Adapter sets held (0 or 1). */
  get size(): number {
    return this.current ? 1 : 0;
  }

  /** A stack holding (at least) `adapters`. */
  get(adapters: Adapter[]): AdapterStack {
    const held = this.current?.adapters ?? [];
    if (this.current && adapters.every((a) => held.includes(a))) return this.current;
    // Grow the working set (dropping adapters unloaded since: their tensors are gone).
    let members = [...new Set([...held, ...adapters])].filter((a) => !a.isDisposed);
    if (members.length > this.maxAdapters) members = [...new Set(adapters)];
    this.clear();
    this.current = new AdapterStack(members);
    return this.current;
  }

  clear(): void {
    this.current?.dispose();
    this.current = null;
  }
}
