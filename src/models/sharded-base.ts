// The frozen base sharded across the ranks of a process group, FSDP-style (shard_base: true): each unit of
// weights (the embeddings, each decoder layer, the head: residency.ts) is flattened, one flat buffer per
// dtype (a quantised projection gives its codes and its float32 scales), and each rank keeps the
// 1/W-th of each buffer that is its own. Before a unit runs, every rank all-gathers the unit's buffers and
// the unit's weights are put in place as views of them; after it, they are freed. Within autograd, the
// views a backward needs stay alive with its graph; with recompute (train/step.ts) the backward runs each
// layer again, so the layer is gathered again. A pass that announces its order (expect) has each next unit
// gathered while the current one computes: two units are whole at a time.
import { zeros } from '../tensor/create.js';
import { cat } from '../tensor/ops.js';
import { noGrad } from '../tensor/autograd.js';
import { tidy } from '../tensor/scope.js';
import { ITEM_SIZE, type DType } from '../tensor/dtype.js';
import type { Device, Tensor } from '../tensor/tensor.js';
import type { Group, StartedGather } from '../distributed/group.js';
import { QuantizedWeight } from '../quant/quantized-weight.js';
import type { ModelConfig } from './config.js';
import { unitOf, type WeightResidency, type WeightUnit } from './residency.js';
import { structureWeights, weightSlots, type FrozenWeight, type ModelWeights, type WeightSlot } from './weights.js';
import { CausalLM } from './causal-lm.js';

/** One tensor of a unit's flat buffer of its dtype: a weight, or a quantised weight's codes or scales. */
interface Part {
  name: string;
  role: 'tensor' | 'codes' | 'scales';
  shape: number[];
  offset: number;
  numel: number;
}

/** A unit's flat buffer of one dtype: its parts, and this rank's share of it. */
interface FlatBuffer {
  dtype: DType;
  parts: Part[];
  /** Elements per rank (the last rank's share padded with zeros). */
  chunk: number;
  shard: Tensor; // [chunk]
}

interface UnitShards {
  buffers: FlatBuffer[];
  /** The quantised projections of the unit: their format and [out, in]. */
  quantized: Map<string, QuantizedWeight>;
  /** Nested uses of the unit in progress; its weights are whole while above 0. */
  uses: number;
  /** The whole weights put in place (views of the gathered buffers), freed when uses return to 0. */
  placed: FrozenWeight[];
}

/** Elements of the parts a frozen weight contributes, by dtype. */
function partsOf(name: string, w: FrozenWeight): { dtype: DType; role: Part['role']; tensor: Tensor }[] {
  if (w instanceof QuantizedWeight)
    return [
      { dtype: w.data.dtype, role: 'codes', tensor: w.data },
      { dtype: w.scales.dtype, role: 'scales', tensor: w.scales },
    ];
  if (w.ndim === 0) throw new Error(`sharded base: '${name}' is a scalar`);
  return [{ dtype: w.dtype, role: 'tensor', tensor: w }];
}

/** Remembers a tensor's metadata before it is freed: a placeholder then still answers shape, dtype and device. */
function touch(t: Tensor): void {
  void t.shape;
  void t.dtype;
  void t.device;
}

export class ShardedBase implements WeightResidency {
  private readonly units = new Map<WeightUnit, UnitShards>();
  private slots: Map<string, WeightSlot> | null = null;
  /** The placements the current pass announced (expect) and has not made yet, in order. */
  private upcoming: WeightUnit[] = [];
  /** The next announced unit's gathers, started while the current unit computes. */
  private ahead: { unit: WeightUnit; gathers: StartedGather[] } | null = null;
  /** Units put in place, and how many of them had been gathered ahead. */
  readonly placements = { total: 0, gatheredAhead: 0 };

  constructor(
    private readonly group: Group,
    private readonly config: ModelConfig,
    private readonly device: Device,
  ) {}

  /** The structure whose placeholders the units' weights replace while in use. */
  attach(weights: ModelWeights): void {
    this.slots = weightSlots(this.config, weights);
  }

  /** Takes a unit's whole weights (by Hugging Face name), keeps this rank's share of them, and frees them: they
   * stay in the structure as placeholders (their shape, dtype and device, no data) until the unit is used. */
  addUnit(unit: WeightUnit, weights: [string, FrozenWeight][]): void {
    if (this.units.has(unit)) throw new Error(`sharded base: unit ${unit} added twice`);
    const W = this.group.worldSize;
    const byDtype = new Map<DType, { parts: Part[]; tensors: Tensor[]; numel: number }>();
    const quantized = new Map<string, QuantizedWeight>();
    for (const [name, w] of weights) {
      if (w instanceof QuantizedWeight) quantized.set(name, w);
      for (const p of partsOf(name, w)) {
        touch(p.tensor);
        const flat = byDtype.get(p.dtype) ?? { parts: [], tensors: [], numel: 0 };
        byDtype.set(p.dtype, flat);
        flat.parts.push({ name, role: p.role, shape: [...p.tensor.shape], offset: flat.numel, numel: p.tensor.numel });
        flat.tensors.push(p.tensor);
        flat.numel += p.tensor.numel;
      }
    }
    const buffers: FlatBuffer[] = [];
    try {
      for (const [dtype, flat] of byDtype) {
        const chunk = Math.ceil(flat.numel / W);
        const shard = noGrad(() =>
          tidy(() => {
            const all = cat([
              ...flat.tensors.map((t) => t.reshape(-1)),
              zeros([chunk * W - flat.numel], { dtype, device: this.device }),
            ]); // [chunk·W]
            return all
              .narrow(0, this.group.rank * chunk, chunk)
              .clone()
              .keep(); // [chunk]
          }),
        );
        buffers.push({ dtype, parts: flat.parts, chunk, shard });
      }
    } finally {
      for (const [, w] of weights) w.dispose();
    }
    this.units.set(unit, { buffers, quantized, uses: 0, placed: [] });
  }

  /** The units the coming pass will use, in order: each next one is gathered while the current one computes (a
   * pass that strays from the list gathers as it goes from there on). The head of tied embeddings counts as
   * the embeddings, then the head. */
  expect(units: WeightUnit[]): void {
    this.upcoming = units.flatMap((u) => (u === 'head' && this.config.tieWordEmbeddings ? ['embed', u] : [u]));
  }

  use<T>(unit: WeightUnit, fn: () => T): T {
    // The head of tied embeddings is the embeddings' weight.
    if (unit === 'head' && this.config.tieWordEmbeddings) return this.useOne('embed', () => this.useOne('head', fn));
    return this.useOne(unit, fn);
  }

  private useOne<T>(unit: WeightUnit, fn: () => T): T {
    const u = this.units.get(unit);
    if (!u) throw new Error(`sharded base: no unit ${unit}`);
    if (u.uses === 0) this.place(unit, u);
    u.uses++;
    try {
      return fn();
    } finally {
      u.uses--;
      if (u.uses === 0) {
        for (const w of u.placed) w.dispose();
        u.placed = [];
      }
    }
  }

  /** Puts the unit's weights in place as views of its gathered buffers (gathered ahead, or now), then starts
   * gathering the next announced unit. Every rank makes the same calls, so their collectives pair up. */
  private place(unit: WeightUnit, u: UnitShards): void {
    let gathers: StartedGather[];
    this.placements.total++;
    if (this.ahead?.unit === unit) {
      gathers = this.ahead.gathers;
      this.placements.gatheredAhead++;
    } else {
      // Not the unit gathered ahead: finish that gather unused (every rank does), and gather this one now.
      for (const g of this.ahead?.gathers ?? []) g.finish().dispose();
      gathers = u.buffers.map((b) => this.group.startAllGather(b.shard));
    }
    this.ahead = null;
    if (this.upcoming[0] === unit) this.upcoming.shift();
    else this.upcoming = [];
    const whole = new Map<string, Map<Part['role'], Tensor>>();
    u.buffers.forEach((b, i) => {
      const gathered = gathers[i]!.finish(); // [W, chunk], ours to free (its views below keep its memory)
      tidy(() => {
        const flat = gathered.reshape(-1).to(this.device); // [W·chunk]
        for (const p of b.parts) {
          const t = flat
            .narrow(0, p.offset, p.numel)
            .reshape(...p.shape)
            .keep(); // a view: the buffer lives on
          touch(t);
          const roles = whole.get(p.name) ?? new Map<Part['role'], Tensor>();
          whole.set(p.name, roles.set(p.role, t));
        }
      });
      gathered.dispose();
    });
    for (const [name, roles] of whole) {
      const q = u.quantized.get(name);
      const w = q
        ? QuantizedWeight.fromParts(q.format, q.shape, roles.get('codes')!, roles.get('scales')!)
        : roles.get('tensor')!;
      this.slots!.get(name)!.set(w);
      u.placed.push(w);
    }
    const next = this.upcoming[0];
    if (next !== undefined) {
      const n = this.units.get(next);
      if (n) this.ahead = { unit: next, gathers: n.buffers.map((b) => this.group.startAllGather(b.shard)) };
    }
  }

  get residentBytes(): number {
    let bytes = 0;
    for (const u of this.units.values()) for (const b of u.buffers) bytes += b.chunk * ITEM_SIZE[b.dtype];
    return bytes;
  }

  dispose(): void {
    // A gather started ahead is finished first: the peers take part in it.
    for (const g of this.ahead?.gathers ?? []) g.finish().dispose();
    this.ahead = null;
    for (const u of this.units.values()) {
      for (const b of u.buffers) b.shard.dispose();
      for (const w of u.placed) w.dispose();
    }
    this.units.clear();
  }
}

/** Builds a sharded base from a stream of whole weights (readHfWeights, or a model's own tensors), one unit at
 * a time: a unit's weights are sharded and freed as soon as the last of them has arrived, so that a rank
 * holds its shares plus at most the units still arriving. `names`: every weight's name, to know when a unit
 * is complete. Returns the structure (placeholders) and the base that puts its units in place. */
export function shardWeights(
  group: Group,
  config: ModelConfig,
  names: string[],
  stream: Iterable<[string, FrozenWeight]>,
  device: Device,
): { weights: ModelWeights; base: ShardedBase } {
  const base = new ShardedBase(group, config, device);
  const expected = new Map<WeightUnit, number>();
  for (const n of names) expected.set(unitOf(n), (expected.get(unitOf(n)) ?? 0) + 1);
  const placeholders = new Map<string, FrozenWeight>();
  const pending = new Map<WeightUnit, [string, FrozenWeight][]>();
  try {
    for (const [name, w] of stream) {
      placeholders.set(name, w);
      const unit = unitOf(name);
      const list = pending.get(unit) ?? [];
      pending.set(unit, list);
      list.push([name, w]);
      if (list.length === expected.get(unit)) {
        pending.delete(unit);
        base.addUnit(unit, list);
      }
    }
    if (pending.size > 0) throw new Error(`sharded base: units ${[...pending.keys()].join(', ')} incomplete`);
  } catch (e) {
    for (const list of pending.values()) for (const [, w] of list) w.dispose();
    base.dispose();
    throw e;
  }
  const weights = structureWeights(config, (n) => placeholders.get(n)!);
  base.attach(weights);
  return { weights, base };
}

/** A model whose frozen weights are sharded across `group` as they stream in (names: every weight's, in any
 * order the stream may follow). */
export function shardedCausalLM(
  group: Group,
  config: ModelConfig,
  dtype: DType,
  device: Device,
  weights: { names: string[]; stream: Iterable<[string, FrozenWeight]> },
): CausalLM {
  const sharded = shardWeights(group, config, weights.names, weights.stream, device);
  const model = new CausalLM(config, sharded.weights, dtype, device);
  model.residency = sharded.base;
  return model;
}
