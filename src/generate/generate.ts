// Text generation: a batch of prompts at once, left-padded so every row's positions and attention
// equal a run of that prompt alone, with a KV cache.
import { manualSeed } from '../tensor/runtime.js';
import { noGrad } from '../tensor/autograd.js';
import { cat } from '../tensor/ops.js';
import { tidy } from '../tensor/scope.js';
import type { Tensor } from '../tensor/tensor.js';
import type { CausalLM } from '../models/causal-lm.js';
import type { ForwardHooks } from '../models/hooks.js';
import { KVCache } from '../models/kvcache.js';
import { packIds } from '../data/packing.js';
import { sampleNext, type SamplingOptions } from './sampling.js';
import { UserError } from '../util/errors.js';

export interface GenerateOptions extends SamplingOptions {
  maxNewTokens: number;
  /** Generation stops for a row when it produces one of these. */
  stopIds: number[];
  seed?: number | null;
  /** Id used to fill left padding (never attended to). */
  padId?: number;
  hooks?: ForwardHooks;
  /** Called after each step with the number of tokens generated so far. */
  onStep?: (step: number) => void;
}

/** How many new tokens fit after a prompt of `promptLen` tokens in the model's context
 * (max_position_embeddings): generation never runs past it. */
export function newTokensThatFit(model: CausalLM, promptLen: number, wanted: number): number {
  return Math.max(0, Math.min(wanted, model.config.maxPositionEmbeddings - promptLen));
}

/** Generates continuations of token-id prompts; returns each row's new tokens (stop token included).
 * At most max_position_embeddings positions in all: maxNewTokens is capped to what fits. */
export function generate(model: CausalLM, prompts: number[][], options: GenerateOptions): number[][] {
  const out: number[][] = prompts.map(() => []);
  for (const step of generateSteps(model, prompts, options))
    step.forEach((id, b) => {
      if (id !== null) out[b]!.push(id);
    });
  return out;
}

/**
 * generate() one decode step at a time: yields, after each step, the token each row produced (null for rows
 * already done); a row is done after a stop token or maxNewTokens. Nothing is held between steps but the
 * generator's own tensors, so a caller may await between steps (the application API streams this way) and
 * may stop early (return() frees the KV cache). Checks the prompts on the first step.
 */
export function* generateSteps(
  model: CausalLM,
  prompts: number[][],
  options: GenerateOptions,
): Generator<(number | null)[], void, void> {
  if (prompts.length === 0) return;
  const empty = prompts.findIndex((p) => p.length === 0);
  if (empty >= 0) throw new UserError(`generate: prompt ${empty + 1} has no tokens (each prompt needs at least one)`);
  const longestPrompt = Math.max(...prompts.map((p) => p.length));
  if (longestPrompt >= model.config.maxPositionEmbeddings && options.maxNewTokens > 0)
    throw new UserError(
      `a prompt of ${longestPrompt} tokens leaves no room to generate in the model's context of ${model.config.maxPositionEmbeddings} positions (max_position_embeddings)`,
    );
  const o = { ...options, maxNewTokens: newTokensThatFit(model, longestPrompt, options.maxNewTokens) };
  if (o.seed !== undefined && o.seed !== null) manualSeed(o.seed);
  const B = prompts.length;
  const longest = Math.max(...prompts.map((p) => p.length));
  const produced = prompts.map(() => 0);
  const done = prompts.map(() => o.maxNewTokens <= 0);
  if (done.every(Boolean)) return;
  const c = model.config;
  // Grown as tokens arrive: a generous max_new_tokens reserves nothing up front.
  const cache = new KVCache(c, B, longest + o.maxNewTokens, model.dtype, model.device, { initial: longest + 64 });
  let input: Tensor | null = null;
  let mask: Tensor | null = null;
  let seen: Tensor | null = null;
  try {
    noGrad(() => {
      const packed = packIds(prompts, { side: 'left', pad: o.padId ?? 0, device: model.device }); // [B, T]
      input = packed.ids.keep();
      mask = packed.mask?.keep() ?? null;
      // Tokens seen so far for the repetition penalty; padding repeats the row's first real token so
      // it adds no penalty of its own.
      seen = tidy(() => packIds(prompts, { side: 'left', pad: (p) => p[0]!, device: model.device }).ids.keep());
    });
    for (let step = 0; step < o.maxNewTokens; step++) {
      // (each step in no-grad mode of its own: between steps the caller's code runs in its own mode)
      const next = noGrad(() =>
        tidy(() => {
          const logits = model.forward(input!, { attentionMask: mask, cache, hooks: o.hooks, lastOnly: true }); // [B, 1, V]
          return sampleNext(logits.select(1, 0), seen!, o).keep(); // [B]
        }),
      );
      const ids = next.toNumbers();
      const emitted = ids.map((id, b) => {
        if (done[b]) return null;
        produced[b]!++;
        if (o.stopIds.includes(id) || produced[b]! >= o.maxNewTokens) done[b] = true;
        return id;
      });
      o.onStep?.(step + 1);
      if (done.every(Boolean)) {
        next.dispose();
        yield emitted;
        break;
      }
      const col = next.unsqueeze(1).keep(); // [B, 1]
      next.dispose();
      input!.dispose();
      input = col;
      const prevSeen: Tensor = seen!;
      seen = cat([prevSeen, col], 1).keep();
      prevSeen.dispose();
      if (mask) {
        const prevMask: Tensor = mask;
        mask = tidy(() => cat([prevMask, col.onesLike()], 1).keep());
        prevMask.dispose();
      }
      yield emitted;
    }
  } finally {
    (input as Tensor | null)?.dispose();
    (seen as Tensor | null)?.dispose();
    (mask as Tensor | null)?.dispose();
    cache.dispose();
  }
}
