// Per-row KV caches for continuous batching. Every running sequence owns a slot of one pooled tensor
// per layer, [slots · capacity, kvHeads, headDim], holding its positions 0..len-1 at slot·capacity + p.
// Rows of different lengths decode together: their caches are gathered right-aligned into a step buffer
// [B, kvHeads, C, headDim] (S = the longest row's cached positions, C ≥ S + 1), with a key mask that hides
// the left gap, so each row's positions and attention equal a run of that sequence alone (as generate's
// left padding does). While the same rows keep decoding, every row advances by one position per step and
// their alignment holds: the buffer is kept, each step writes its one new column into it (and into the
// slots), and attention reads a view, instead of gathering B·S positions per layer again.
import { empty, tensor, zeros } from '../tensor/create.js';
import { tidy } from '../tensor/scope.js';
import type { DType } from '../tensor/dtype.js';
import type { Device, Tensor } from '../tensor/tensor.js';
import type { ModelConfig } from '../models/config.js';
import type { AttentionCache } from '../models/kvcache.js';

/** The decode steps' right-aligned keys and values of one set of rows (see above). */
interface StepBuffer {
  /** The rows it holds: slot and acquisition of each, in order. */
  rows: string;
  /** Each row's left gap (S - its length): unchanged while the rows decode together. */
  gaps: string;
  /** Columns filled (the next step's S). */
  filled: number;
  /** Columns allocated (C). */
  columns: number;
  keys: Tensor[];
  values: Tensor[];
}

/** Spare columns a step buffer gets when (re)built: it is rebuilt when the rows change or it is full. */
const STEP_HEADROOM = 64;

export class KVPool {
  private keys: Tensor[] = [];
  private values: Tensor[] = [];
  private step: StepBuffer | null = null;
  /** Acquisitions per slot: a slot reused by another sequence is another row for the step buffer. */
  private readonly epochs: number[];
  /** Positions each slot can hold (grows on demand, up to the model's context). */
  capacity = 0;
  private readonly free: number[];

  constructor(
    private readonly config: ModelConfig,
    readonly slots: number,
    private readonly dtype: DType,
    private readonly device: Device,
  ) {
    this.free = Array.from({ length: slots }, (_, i) => slots - 1 - i);
    this.epochs = new Array<number>(slots).fill(0);
  }

  get freeSlots(): number {
    return this.free.length;
  }

  /** A free slot able to hold `positions` positions. */
  acquire(positions: number): number {
    const slot = this.free.pop();
    if (slot === undefined) throw new Error('KVPool: no free slot');
    this.reserve(positions);
    this.epochs[slot]! += 1;
    return slot;
  }

  /** Makes every slot hold at least `positions` positions. Slots grow as sequences do (doubling), not to
   * their requested maximum, so memory follows the longest running sequence. */
  reserve(positions: number): void {
    if (positions > this.capacity) this.grow(positions);
  }

  /** Frees a slot. The memory stays for the next sequences: allocating and growing the pool again for
   * every burst of requests cost about as much as a tenth of a 64-token request. The engine disposes
   * the pool after a quiet spell instead. */
  release(slot: number): void {
    this.free.push(slot);
  }

  /** True when no slot is held. */
  get empty(): boolean {
    return this.free.length === this.slots;
  }

  private grow(positions: number): void {
    const c = this.config;
    const cap = Math.min(Math.max(positions, this.capacity * 2, 64), Math.max(positions, c.maxPositionEmbeddings));
    const resize = (old: Tensor | undefined): Tensor => {
      const t = zeros([this.slots * cap, c.numKvHeads, c.headDim], { dtype: this.dtype, device: this.device }).keep();
      if (old) {
        tidy(() => {
          t.view(this.slots, cap, c.numKvHeads, c.headDim)
            .narrow(1, 0, this.capacity)
            .copy_(old.view(this.slots, this.capacity, c.numKvHeads, c.headDim)); // [slots, cap, nKV, D]
        });
        old.dispose();
      }
      return t;
    };
    for (let l = 0; l < c.numLayers; l++) {
      this.keys[l] = resize(this.keys[l]);
      this.values[l] = resize(this.values[l]);
    }
    this.capacity = cap;
  }

  /** The cache for prefilling one sequence (batch 1) into `slot` from position 0. */
  prefillCache(slot: number): AttentionCache {
    return {
      length: 0,
      update: (layer, k, v) => {
        const T = k.size(2); // k, v [1, nKV, T, D]
        const at = slot * this.capacity;
        this.keys[layer]!.narrow(0, at, T).copy_(k.select(0, 0).transpose(0, 1)); // [T, nKV, D]
        this.values[layer]!.narrow(0, at, T).copy_(v.select(0, 0).transpose(0, 1));
        return [k, v];
      },
      advance: () => {},
    };
  }

  /** The cache for prefilling rows together from position 0: prompts left-padded to the longest, P
   * positions, as in `forward`'s input; each row's last `len` positions (its prompt) go to its slot.
   * Call under a scope: the index tensors are temporaries. */
  prefillBatchCache(rows: { slot: number; len: number }[], P: number): AttentionCache {
    const c = this.config;
    const from: number[] = [];
    const to: number[] = [];
    rows.forEach(({ slot, len }, b) => {
      for (let p = 0; p < len; p++) {
        from.push(b * P + P - len + p);
        to.push(slot * this.capacity + p);
      }
    });
    const opts = { dtype: 'int64' as const, device: this.device };
    const fromIdx = tensor(from, opts); // [N] rows of the [B·P] positions that are prompt tokens
    const toIdx = tensor(to, opts); // [N] their places in the pool
    const store = (pool: Tensor, fresh: Tensor): void => {
      const flat = fresh.transpose(1, 2).reshape(-1, c.numKvHeads, c.headDim); // [B·P, nKV, D]
      pool.indexCopy_(0, toIdx, flat.indexSelect(0, fromIdx));
    };
    return {
      length: 0,
      update: (layer, k, v) => {
        store(this.keys[layer]!, k); // k, v [B, nKV, P, D]
        store(this.values[layer]!, v);
        return [k, v];
      },
      advance: () => {},
    };
  }

  /** The cache for one decode step of rows (slot, cached length); also the key mask [B, S + 1] it
   * needs. Call under a scope: the index tensors are temporaries. */
  stepCache(rows: { slot: number; len: number }[]): { cache: AttentionCache; keyMask: Tensor } {
    const S = Math.max(...rows.map((row) => row.len));
    const opts = { dtype: 'int64' as const, device: this.device };
    const key = rows.map(({ slot }) => `${slot}:${this.epochs[slot]}`).join(',');
    const gaps = rows.map(({ len }) => S - len).join(',');
    let buf = this.step;
    if (!buf || buf.rows !== key || buf.gaps !== gaps || buf.filled !== S || buf.columns < S + 1) {
      this.disposeStep();
      buf = this.buildStep(rows, S, key, gaps);
    }
    const writeIdx = tensor(
      rows.map(({ slot, len }) => slot * this.capacity + len),
      opts,
    ); // [B]
    const keyMask = tensor(
      rows.map(({ len }) => Array.from({ length: S + 1 }, (_, j) => (j < S - len ? 0 : 1))),
      opts,
    ); // [B, S + 1]
    const write = (pool: Tensor, step: Tensor, fresh: Tensor): Tensor => {
      pool.indexCopy_(0, writeIdx, fresh.select(2, 0)); // fresh [B, nKV, 1, D]: into the slots
      step.narrow(2, S, 1).copy_(fresh); // and the step's new column
      return step.narrow(2, 0, S + 1); // [B, nKV, S + 1, D], a view
    };
    const held = buf;
    const cache: AttentionCache = {
      length: S,
      update: (layer, k, v) => [
        write(this.keys[layer]!, held.keys[layer]!, k),
        write(this.values[layer]!, held.values[layer]!, v),
      ],
      advance: () => {
        held.filled = S + 1;
      },
    };
    return { cache, keyMask };
  }

  /** A step buffer for `rows`, their S cached positions gathered right-aligned from the slots. The gap
   * holds position 0 of its row (real data, masked out): never uninitialised memory. */
  private buildStep(rows: { slot: number; len: number }[], S: number, key: string, gaps: string): StepBuffer {
    const c = this.config;
    const B = rows.length;
    const columns = S + 1 + STEP_HEADROOM;
    const read: number[] = [];
    for (const { slot, len } of rows)
      for (let j = 0; j < S; j++) read.push(slot * this.capacity + (j < S - len ? 0 : j - (S - len)));
    const buffer: StepBuffer = { rows: key, gaps, filled: S, columns, keys: [], values: [] };
    tidy(() => {
      const readIdx = tensor(read, { dtype: 'int64', device: this.device }); // [B · S]
      const gather = (pool: Tensor): Tensor => {
        // Uninitialised past S: each step writes its column before attention reads up to it.
        const t = empty([B, c.numKvHeads, columns, c.headDim], { dtype: this.dtype, device: this.device }).keep();
        t.narrow(2, 0, S).copy_(pool.indexSelect(0, readIdx).view(B, S, c.numKvHeads, c.headDim).transpose(1, 2));
        return t; // [B, nKV, C, D]
      };
      for (let l = 0; l < c.numLayers; l++) {
        buffer.keys.push(gather(this.keys[l]!));
        buffer.values.push(gather(this.values[l]!));
      }
    });
    this.step = buffer;
    return buffer;
  }

  private disposeStep(): void {
    for (const t of [...(this.step?.keys ?? []), ...(this.step?.values ?? [])]) t.dispose();
    this.step = null;
  }

  dispose(): void {
    this.disposeStep();
    for (const t of [...this.keys, ...this.values]) t.dispose();
    this.keys = [];
    this.values = [];
    this.capacity = 0;
  }
}
