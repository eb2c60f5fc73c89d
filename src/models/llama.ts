// The LLaMA-family decoder (LLaMA 1/2/3, TinyLlama, Mistral, Qwen2) over frozen weights, in Hugging
// Face semantics (docs/design.md §2). Adapters enter through ForwardHooks.
import { arange, ones } from '../tensor/create.js';
import { embedding, linear, scaledDotProductAttention } from '../tensor/ops.js';
import { tidy } from '../tensor/scope.js';
import type { DType } from '../tensor/dtype.js';
import type { Device, Tensor } from '../tensor/tensor.js';
import { rmsNorm } from '../nn/norm.js';
import { applyRotary, inverseFrequencies, rotaryTables, type RotaryTables } from '../nn/rope.js';
import { attentionMask, positionsFromMask } from '../nn/mask.js';
import type { ModelConfig } from './config.js';
import { plainHooks, type ForwardHooks } from './hooks.js';
import type { AttentionCache } from './kvcache.js';
import { disposeWeights, type ModelWeights } from './weights.js';
import { UserError } from '../util/errors.js';

export interface ForwardOptions {
  /** [B, S]: 1 for tokens, 0 for padding, over cached and new positions. Absent: no padding. */
  attentionMask?: Tensor | null;
  cache?: AttentionCache | null;
  hooks?: ForwardHooks;
  /** Logits for the last position only (generation). */
  lastOnly?: boolean;
  /** Logits only at these flat positions (row · T + t), [N] int64: returns [N, V] (scoring). */
  at?: Tensor | null;
}

/** What every layer of one forward pass shares. */
export interface LayerContext {
  rotary: RotaryTables;
  mask: Tensor | null;
  causal: boolean;
  cache: AttentionCache | null;
}

export class CausalLM {
  private readonly invFreq: number[];

  constructor(
    readonly config: ModelConfig,
    readonly weights: ModelWeights,
    readonly dtype: DType,
    readonly device: Device,
  ) {
    this.invFreq = inverseFrequencies(config.headDim, config.ropeTheta, config.ropeScaling);
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
    const ctx = this.context(ids, opts.attentionMask ?? null, opts.cache ?? null);
    hooks.beginForward?.(opts.attentionMask ? opts.attentionMask.narrow(1, opts.attentionMask.size(1) - T, T) : null);
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
    return embedding(this.weights.embed, ids);
  }

  /** Rotary tables and the attention mask for a pass over ids [B, T] after `cache.length` positions. */
  context(ids: Tensor, keyMask: Tensor | null, cache: AttentionCache | null): LayerContext {
    const [B, T] = [ids.size(0), ids.size(1)];
    const past = cache?.length ?? 0;
    const window = this.config.slidingWindow;
    const windowBites = window !== null && past + T > window;
    let positions: Tensor; // [B, T]
    let mask: Tensor | null = null;
    let causal = false;
    if (keyMask === null && !windowBites && (past === 0 || T === 1)) {
      positions = arange(past, past + T, 1, { device: this.device })
        .unsqueeze(0)
        .expand(B, T);
      causal = past === 0 && T > 1; // decode step: sees all
    } else {
      const keys = keyMask ?? ones([B, past + T], { dtype: 'int64', device: this.device });
      if (keys.size(1) !== past + T)
        throw new RangeError(`attention mask covers ${keys.size(1)} positions; ${past + T} expected`);
      positions = positionsFromMask(keys).narrow(1, past, T);
      mask = attentionMask(keys, T, window); // [B, 1, T, S]
    }
    const rotary = rotaryTables(positions, this.invFreq, this.weights.norm);
    return { rotary, mask, causal, cache };
  }

  /** One decoder block on h [B, T, H]. */
  layer(l: number, h: Tensor, ctx: LayerContext, hooks: ForwardHooks): Tensor {
    const c = this.config;
    const w = this.weights.layers[l]!;
    const [B, T] = [h.size(0), h.size(1)];
    const x = rmsNorm(h, w.inputNorm, c.rmsNormEps); // [B, T, H]
    const q = hooks.project(l, 'q_proj', x, w.proj.q_proj).view(B, T, c.numHeads, c.headDim).transpose(1, 2); // [B, nH, T, D]
    let k = hooks.project(l, 'k_proj', x, w.proj.k_proj).view(B, T, c.numKvHeads, c.headDim).transpose(1, 2); // [B, nKV, T, D]
    let v = hooks.project(l, 'v_proj', x, w.proj.v_proj).view(B, T, c.numKvHeads, c.headDim).transpose(1, 2); // [B, nKV, T, D]
    const qr = applyRotary(q, ctx.rotary); // [B, nH, T, D]
    k = applyRotary(k, ctx.rotary);
    if (ctx.cache) [k, v] = ctx.cache.update(l, k, v); // [B, nKV, S, D]
    const rep = c.numHeads / c.numKvHeads;
    if (rep > 1) {
      const S = k.size(2);
      k = k.unsqueeze(2).expand(B, c.numKvHeads, rep, S, c.headDim).reshape(B, c.numHeads, S, c.headDim); // [B, nH, S, D]
      v = v.unsqueeze(2).expand(B, c.numKvHeads, rep, S, c.headDim).reshape(B, c.numHeads, S, c.headDim);
    }
    const attn = scaledDotProductAttention(qr, k, v, { mask: ctx.mask, causal: ctx.causal }); // [B, nH, T, D]
    const merged = attn.transpose(1, 2).reshape(B, T, c.numHeads * c.headDim); // [B, T, nH·D]
    const h2 = h.add(hooks.project(l, 'o_proj', merged, w.proj.o_proj)); // [B, T, H]
    return h2.add(hooks.mlp(l, rmsNorm(h2, w.postNorm, c.rmsNormEps), w)); // [B, T, H]
  }

  /** Final norm and the LM head: logits [B, T, V] in float32. */
  head(h: Tensor): Tensor {
    return linear(rmsNorm(h, this.weights.norm, this.config.rmsNormEps), this.weights.lmHead).to('float32');
  }

  /** Number of parameters of the frozen model (tied embeddings counted once). */
  parameterCount(): number {
    const c = this.config;
    let n = c.vocabSize * c.hiddenSize * (c.tieWordEmbeddings ? 1 : 2) + c.hiddenSize;
    for (const l of this.weights.layers) {
      n += l.inputNorm.numel + l.postNorm.numel;
      for (const p of Object.values(l.proj)) n += p.weight.numel + (p.bias ? p.bias.numel : 0);
    }
    return n;
  }

  dispose(): void {
    disposeWeights(this.weights);
  }
}
