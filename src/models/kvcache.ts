// Key/value cache for generation: per layer [B, kvHeads, capacity, headDim], filled in place. The
// capacity starts small and doubles as needed up to maxLen: a large max_new_tokens reserves nothing
// until the tokens exist.
import { zeros } from '../tensor/create.js';
import { isGradEnabled } from '../tensor/autograd.js';
import type { DType } from '../tensor/dtype.js';
import type { Device, Tensor } from '../tensor/tensor.js';
import type { ModelConfig } from './config.js';

/** What attention needs of a cache: how many positions precede the new ones, and a per-layer write
 * that returns all keys/values so far. KVCache is the plain one; the server has per-row ones. */
export interface AttentionCache {
  readonly length: number;
  update(layer: number, k: Tensor, v: Tensor): [Tensor, Tensor];
  /** Attention computed by the cache itself from its own storage (the server's paged blocks, read in
   * place) for q [B, nH, T, D] -> [B, nH, T, D]; absent: attention runs over what update returned. */
  attend?(layer: number, q: Tensor, o: { window: number | null; scale: number }): Tensor;
  advance(T: number): void;
}

export class KVCache implements AttentionCache {
  private readonly keys: Tensor[] = [];
  private readonly values: Tensor[] = [];
  /** Positions already written (the same for every row: padding is a masked position, not a gap). */
  length = 0;
  /** Positions the buffers hold now (grows up to maxLen). */
  capacity: number;

  constructor(
    c: ModelConfig,
    readonly batch: number,
    readonly maxLen: number,
    private readonly dtype: DType,
    private readonly device: Device,
    opts: { initial?: number } = {},
  ) {
    this.capacity = Math.min(maxLen, Math.max(1, opts.initial ?? 256));
    for (let l = 0; l < c.numLayers; l++) {
      this.keys.push(zeros([batch, c.numKvHeads, this.capacity, c.headDim], { dtype, device }).keep()); // [B, Hkv, cap, D]
      this.values.push(zeros([batch, c.numKvHeads, this.capacity, c.headDim], { dtype, device }).keep());
    }
  }

  /** Doubles the buffers (at least to `needed`, at most to maxLen), keeping what is written. */
  private grow(needed: number): void {
    const cap = Math.min(this.maxLen, Math.max(needed, 2 * this.capacity));
    const regrow = (t: Tensor): Tensor => {
      const [B, H, , D] = t.shape as [number, number, number, number];
      const bigger = zeros([B, H, cap, D], { dtype: this.dtype, device: this.device }).keep(); // [B, Hkv, cap, D]
      bigger.narrow(2, 0, this.length).copy_(t.narrow(2, 0, this.length));
      t.dispose();
      return bigger;
    };
    for (let l = 0; l < this.keys.length; l++) {
      this.keys[l] = regrow(this.keys[l]!);
      this.values[l] = regrow(this.values[l]!);
    }
    this.capacity = cap;
  }

  /** Writes k, v [B, kvHeads, T, D] after the cached positions; returns all keys/values so far. */
  update(layer: number, k: Tensor, v: Tensor): [Tensor, Tensor] {
    if (isGradEnabled()) throw new Error('KVCache is for inference: call it under noGrad()');
    const T = k.size(2);
    if (this.length + T > this.maxLen)
      throw new RangeError(`KV cache holds ${this.maxLen} positions; ${this.length + T} needed`);
    if (this.length + T > this.capacity) this.grow(this.length + T);
    this.keys[layer]!.narrow(2, this.length, T).copy_(k);
    this.values[layer]!.narrow(2, this.length, T).copy_(v);
    return [this.keys[layer]!.narrow(2, 0, this.length + T), this.values[layer]!.narrow(2, 0, this.length + T)];
  }

  /** Called once per forward pass, after every layer wrote its T new positions. */
  advance(T: number): void {
    this.length += T;
  }

  dispose(): void {
    for (const t of [...this.keys, ...this.values]) t.dispose();
  }
}
