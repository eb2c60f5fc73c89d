// The decoder of LLaMA 1/2/3, TinyLlama, Mistral, Qwen2, Gemma, Gemma 2 and Phi-3 over frozen weights, in
// Hugging Face semantics (docs/design.md §2). Adapters enter through ForwardHooks. The families' own
// differences live in gemma.ts (norms, embedding scale), gemma2.ts (its block) and phi3.ts (fused
// projections).
import { arange, ones } from '../tensor/create.js';
import { embedding, linear } from '../tensor/ops.js';
import { noGrad } from '../tensor/autograd.js';
import { tidy } from '../tensor/scope.js';
import type { DType } from '../tensor/dtype.js';
import type { Device, Tensor } from '../tensor/tensor.js';
import { attend } from '../nn/attention.js';
import { applyRotary, inverseFrequencies, rotaryTables, type RotaryTables } from '../nn/rope.js';
import { attentionMask, positionsFromMask, segmentMask } from '../nn/mask.js';
import type { RowSegments } from '../nn/mask.js';
import { layerWindow, type ModelConfig } from './config.js';
import { normFor, scaleEmbeddings } from './gemma.js';
import { gemma2Block } from './gemma2.js';
import { plainHooks, type ForwardHooks } from './hooks.js';
import type { AttentionCache } from './kvcache.js';
import { splitQkv } from './phi3.js';
import { disposeWeights, hasSandwichNorms, linearOf, type ModelWeights } from './weights.js';
import type { WeightResidency, WeightUnit } from './residency.js';
import { UserError } from '../util/errors.js';

export interface ForwardOptions {
  /** Shape [B, S]: 1 for tokens, 0 for padding, over cached and new positions. Absent: no padding. */
  attentionMask?: Tensor | null;
  cache?: AttentionCache | null;
  hooks?: ForwardHooks;
  /** Logits for the last position only (generation). */
  lastOnly?: boolean;
  /** Logits only at these flat positions (row · T + t), [N] int64: returns [N, V] (scoring). */
  at?: Tensor | null;
  /** [B, T] int64: the tokens' positions, where no mask says them (the server's paged decode steps). */
  positions?: Tensor | null;
  /** Rows that pack several examples (training with packing: true): attention stays within each example and
   * positions restart at each (see segmentMask). No cache. */
  packed?: RowSegments | null;
}

/** Which keys the queries of a layer see: a mask, or plain causal attention (or all keys) without one. */
export interface AttentionPattern {
  mask: Tensor | null;
  causal: boolean;
}

/** What every layer of one forward pass shares. */
export interface LayerContext {
  rotary: RotaryTables;
  /** By sliding window (null: full attention), for the windows the model's layers use. */
  patterns: Map<number | null, AttentionPattern>;
  cache: AttentionCache | null;
}

export class CausalLM {
  private readonly invFreq: number[];
  /** The family's RMSNorm on x [.., H] with weight w [H]. */
  readonly norm: (x: Tensor, w: Tensor) => Tensor;
  /** Where the frozen weights live between uses: null, all resident; a sharded base (shard_base) gathers
   * each unit around its use (withWeights). */
  residency: WeightResidency | null = null;

  /**
   * `dtype` is the compute dtype: the activations', the products', the attention cache's. The weights keep the
   * dtype they were loaded in (weightDType); a bfloat16 model may compute in float32 (src/tensor/compute-mode.ts),
   * each weight widened for its product (native/kernels/linear.cc).
   */
  constructor(
    readonly config: ModelConfig,
    readonly weights: ModelWeights,
    readonly dtype: DType,
    readonly device: Device,
  ) {
    this.invFreq = inverseFrequencies(config.rotaryDim, config.ropeTheta, config.ropeScaling);
    const norm = normFor(config);
    this.norm = (x, w) => norm(x, w, config.rmsNormEps);
  }

  /** The dtype the frozen weights are stored in (quantised projections aside): `dtype`, or narrower. */
  get weightDType(): DType {
    return this.weights.embed.dtype;
  }

  /** Runs fn with a unit's frozen weights in place in `weights` (always so, unless the base is sharded). */
  withWeights<T>(unit: WeightUnit, fn: () => T): T {
    return this.residency ? this.residency.use(unit, fn) : fn();
  }

  /** Logits [B, T, V] (float32) for token ids [B, T] (see ForwardOptions for other shapes). */
  forward(ids: Tensor, opts: ForwardOptions = {}): Tensor {
    return tidy(() => {
      const h = this.lastHidden(ids, opts); // [B, T, H]
      if (opts.at) return this.head(h.reshape(-1, h.size(2)).indexSelect(0, opts.at)); // [N, V]
      return this.head(opts.lastOnly ? h.narrow(1, h.size(1) - 1, 1) : h);
    });
  }

  /** The last decoder layer's output [B, T, H], before the final norm and the LM head. Temporaries are
   * freed here: only the result reaches the caller's scope. */
  lastHidden(ids: Tensor, opts: ForwardOptions = {}): Tensor {
    return tidy(() => this.runLayers(ids, opts));
  }

  private runLayers(ids: Tensor, opts: ForwardOptions): Tensor {
    const hooks = opts.hooks ?? plainHooks;
    const T = ids.size(1);
    const ctx = this.context(
      ids,
      opts.attentionMask ?? null,
      opts.cache ?? null,
      opts.positions ?? null,
      opts.packed ?? null,
    );
    hooks.beginForward?.(
      opts.attentionMask ? opts.attentionMask.narrow(1, opts.attentionMask.size(1) - T, T) : null,
      opts.packed ?? null,
    );
    let h = this.embed(ids); // [B, T, H]
    for (let l = 0; l < this.config.numLayers; l++) {
      const prev = h;
      h = tidy(() => this.layer(l, prev, ctx, hooks));
      if (l > 0) prev.dispose();
    }
    opts.cache?.advance(T);
    return h;
  }

  /** Token embeddings [B, T, H]; ids are checked against the vocabulary first. */
  embed(ids: Tensor): Tensor {
    const max = ids.amax().item();
    const min = ids.amin().item();
    if (min < 0 || max >= this.config.vocabSize) {
      throw new UserError(
        `token id ${min < 0 ? min : max} is outside the model's vocabulary (0..${this.config.vocabSize - 1}): does the tokenizer or the data belong to this model?`,
      );
    }
    const e = this.withWeights('embed', () => embedding(this.weights.embed, ids)); // [B, T, H] in the weights' dtype
    return scaleEmbeddings(e.dtype === this.dtype ? e : e.to(this.dtype), this.config, this.weightDType); // [B, T, H]
  }

  /** Rotary tables and the attention masks for a pass over ids [B, T] after `cache.length` positions (at
   * `given` positions when given); with `packed`, over rows of several examples each (block-diagonal causal
   * attention, positions per example). */
  context(
    ids: Tensor,
    keyMask: Tensor | null,
    cache: AttentionCache | null,
    given: Tensor | null = null,
    packed: RowSegments | null = null,
  ): LayerContext {
    const [B, T] = [ids.size(0), ids.size(1)];
    if (packed) {
      if (cache) throw new RangeError('packed rows take no attention cache');
      const patterns = new Map<number | null, AttentionPattern>();
      for (let l = 0; l < this.config.numLayers; l++) {
        const window = layerWindow(this.config, l);
        if (!patterns.has(window)) patterns.set(window, { mask: segmentMask(packed.segments, window), causal: false });
      }
      return { rotary: rotaryTables(packed.positions, this.invFreq, this.dtype), patterns, cache: null };
    }
    const past = cache?.length ?? 0;
    let keys: Tensor | null = null; // [B, S], made once when a mask needs it
    const keysOf = (): Tensor => {
      keys ??= keyMask ?? ones([B, past + T], { dtype: 'int64', device: this.device });
      if (keys.size(1) !== past + T)
        throw new RangeError(`attention mask covers ${keys.size(1)} positions; ${past + T} expected`);
      return keys;
    };
    const patterns = new Map<number | null, AttentionPattern>();
    for (let l = 0; l < this.config.numLayers; l++) {
      const window = layerWindow(this.config, l);
      if (patterns.has(window)) continue;
      const windowBites = window !== null && past + T > window;
      if (keyMask === null && !windowBites && (past === 0 || T === 1)) {
        patterns.set(window, { mask: null, causal: past === 0 && T > 1 }); // a decode step sees all
      } else {
        patterns.set(window, { mask: attentionMask(keysOf(), T, window), causal: false }); // [B, 1, T, S]
      }
    }
    const positions = given // [B, T]
      ? given
      : keyMask
        ? positionsFromMask(keysOf()).narrow(1, past, T)
        : arange(past, past + T, 1, { device: this.device })
            .unsqueeze(0)
            .expand(B, T);
    const rotary = rotaryTables(positions, this.invFreq, this.dtype);
    return { rotary, patterns, cache };
  }

  /** One decoder block on h [B, T, H]. */
  layer(l: number, h: Tensor, ctx: LayerContext, hooks: ForwardHooks): Tensor {
    return this.withWeights(l, () => this.block(l, h, ctx, hooks));
  }

  private block(l: number, h: Tensor, ctx: LayerContext, hooks: ForwardHooks): Tensor {
    if (hasSandwichNorms(this.config)) return gemma2Block(this, l, h, ctx, hooks);
    const w = this.weights.layers[l]!;
    const h2 = h.add(this.attention(l, this.norm(h, w.inputNorm), ctx, hooks)); // [B, T, H]
    return h2.add(hooks.mlp(l, this.norm(h2, w.postNorm), w, this.config.hiddenAct)); // [B, T, H]
  }

  /** Self-attention of layer l on the normalised x [B, T, H], through o_proj: [B, T, H]. */
  attention(l: number, x: Tensor, ctx: LayerContext, hooks: ForwardHooks): Tensor {
    const c = this.config;
    const w = this.weights.layers[l]!;
    const [B, T] = [x.size(0), x.size(1)];
    let [q, k, v] = w.proj.qkv_proj // [B, T, nH·D], [B, T, nKV·D] × 2
      ? splitQkv(hooks.project(l, 'qkv_proj', x, w.proj.qkv_proj), c)
      : (['q_proj', 'k_proj', 'v_proj'] as const).map((p) => hooks.project(l, p, x, linearOf(w, p)));
    q = applyRotary(q!.reshape(B, T, c.numHeads, c.headDim).transpose(1, 2), ctx.rotary); // [B, nH, T, D]
    k = applyRotary(k!.reshape(B, T, c.numKvHeads, c.headDim).transpose(1, 2), ctx.rotary); // [B, nKV, T, D]
    v = v!.reshape(B, T, c.numKvHeads, c.headDim).transpose(1, 2); // [B, nKV, T, D]
    if (ctx.cache) [k, v] = ctx.cache.update(l, k, v); // [B, nKV, S, D]
    const scale = c.attentionScalar ** -0.5;
    if (ctx.cache?.attend) {
      const own = ctx.cache.attend(l, q, { window: layerWindow(c, l), scale }); // [B, nH, T, D]
      const merged = own.transpose(1, 2).reshape(B, T, c.numHeads * c.headDim); // [B, T, nH·D]
      return hooks.project(l, 'o_proj', merged, linearOf(w, 'o_proj')); // [B, T, H]
    }
    const rep = c.numHeads / c.numKvHeads;
    if (rep > 1) {
      const S = k.size(2);
      k = k.unsqueeze(2).expand(B, c.numKvHeads, rep, S, c.headDim).reshape(B, c.numHeads, S, c.headDim); // [B, nH, S, D]
      v = v.unsqueeze(2).expand(B, c.numKvHeads, rep, S, c.headDim).reshape(B, c.numHeads, S, c.headDim);
    }
    const pattern = ctx.patterns.get(layerWindow(c, l))!;
    const attn = attend(q, k, v, { ...pattern, scale, softcap: c.attnLogitSoftcap }); // [B, nH, T, D]
    const merged = attn.transpose(1, 2).reshape(B, T, c.numHeads * c.headDim); // [B, T, nH·D]
    return hooks.project(l, 'o_proj', merged, linearOf(w, 'o_proj')); // [B, T, H]
  }

  /** Final norm and the LM head: logits [B, T, V] in float32 (Gemma 2 soft-caps them first, in the model's
   * dtype, as transformers does). `lmHead`: the head's weight, or headWeight()'s copy of it. */
  head(h: Tensor, lmHead?: Tensor): Tensor {
    return this.withWeights('head', () => {
      const logits = linear(this.norm(h, this.weights.norm), lmHead ?? this.weights.lmHead); // [B, T, V]
      const cap = this.config.finalLogitSoftcap;
      return (cap === null ? logits : logits.div(cap).tanh().mul(cap)).to('float32');
    });
  }

  /** The LM head's weight [V, H] in the compute dtype, for many head() calls in a row (the loss's chunks):
   * the weight itself, or, when it is stored narrower, one widened copy (owned by the current scope; free it
   * after the calls) instead of a widening per call. A sharded base: call within withWeights('head'). */
  headWeight(): Tensor {
    const w = this.weights.lmHead;
    return w.dtype === this.dtype ? w : noGrad(() => w.to(this.dtype));
  }

  /** Number of parameters of the frozen model (tied embeddings counted once). */
  parameterCount(): number {
    const c = this.config;
    let n = c.vocabSize * c.hiddenSize * (c.tieWordEmbeddings ? 1 : 2) + c.hiddenSize;
    for (const l of this.weights.layers) {
      n += l.inputNorm.numel + l.postNorm.numel + (l.ffnNorms ? l.ffnNorms.pre.numel + l.ffnNorms.post.numel : 0);
      for (const p of Object.values(l.proj)) n += p.weight.numel + (p.bias ? p.bias.numel : 0);
    }
    return n;
  }

  dispose(): void {
    this.residency?.dispose();
    disposeWeights(this.weights);
  }
}
