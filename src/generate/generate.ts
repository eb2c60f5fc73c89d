// Text generation for a fixed set of prompts: a client of the serving engine's core (serve/engine-core.ts),
// so generation and serving share one decode loop, one paged KV cache and one sampler. Every row computes
// what it would alone (the engine's rows never see each other's positions), and rows may run through
// different adapters in the same forward, as PEFT's `generate(adapter_names=...)`.
import type { CausalLM } from '../models/causal-lm.js';
import type { Adapter } from '../adapters/adapter.js';
import { blockBytes, blocksFor, kvBlocks } from '../serve/block-pool.js';
import { EngineCore, type SequenceSpec } from '../serve/engine-core.js';
import { ServerMetrics } from '../serve/metrics.js';
import { UserError } from '../util/errors.js';

export interface GenerateOptions {
  maxNewTokens: number;
  /** 0 = greedy (argmax). */
  temperature: number;
  topK: number | null;
  topP: number | null;
  /** > 1 discourages tokens already in the prompt or the output (Hugging Face's rule: positive logits
   * divided by it, negative ones multiplied). */
  repetitionPenalty: number | null;
  /** Generation stops for a row when it produces one of these. */
  stopIds: number[];
  /** Row b samples from its own generator seeded with seed + b: a row's output does not depend on the
   * other rows. */
  seed?: number | null;
  /** The adapter every row runs through, or one per prompt; null or absent: the base model. */
  adapter?: Adapter | null | (Adapter | null)[];
  /** Called after each step with the number of tokens the longest row has so far. */
  onStep?: (step: number) => void;
  /** The KV cache's memory in MiB. Default: every row's whole sequence, at most 40% of the available
   * memory (as `mixlora serve`'s default). It must hold the longest row's sequence; rows that do not fit
   * together wait, or give their blocks up and are computed again (the same tokens). */
  kvCacheMib?: number;
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
 * generate() a step at a time: yields the next token of each row (null for a row with none this step: it
 * is done, or its prompt is still being computed); a row is done after a stop token or maxNewTokens.
 * Between steps nothing runs, so a caller may await between them (the application API streams this way)
 * and may stop early (return() frees the KV cache). Checks the prompts on the first step.
 */
export function* generateSteps(
  model: CausalLM,
  prompts: number[][],
  options: GenerateOptions,
): Generator<(number | null)[], void, void> {
  if (prompts.length === 0) return;
  const empty = prompts.findIndex((p) => p.length === 0);
  if (empty >= 0) throw new UserError(`generate: prompt ${empty + 1} has no tokens (each prompt needs at least one)`);
  const { adapter } = options;
  if (Array.isArray(adapter) && adapter.length !== prompts.length)
    throw new UserError(`generate: ${adapter.length} adapters given for ${prompts.length} prompts (one per prompt)`);
  const longest = Math.max(...prompts.map((p) => p.length));
  if (longest >= model.config.maxPositionEmbeddings && options.maxNewTokens > 0)
    throw new UserError(
      `a prompt of ${longest} tokens leaves no room to generate in the model's context of ${model.config.maxPositionEmbeddings} positions (max_position_embeddings)`,
    );
  const maxNew = newTokensThatFit(model, longest, options.maxNewTokens);
  if (maxNew <= 0) return;
  const pending: number[][] = prompts.map(() => []);
  const produced = prompts.map(() => 0);
  const ended = prompts.map(() => false);
  let failure: Error | null = null;
  const specs = prompts.map((prompt, b): SequenceSpec => ({
    prompt,
    maxTokens: maxNew,
    modelName: 'generate',
    adapter: (Array.isArray(adapter) ? adapter[b] : adapter) ?? null,
    sampling: {
      temperature: options.temperature,
      topK: options.topK,
      topP: options.topP,
      repetitionPenalty: options.repetitionPenalty,
      seed: options.seed == null ? null : (options.seed + b) >>> 0,
      logprobs: null,
      // The row ends at these ids (the engine below is given no EOS ids of its own).
      stopTokenIds: options.stopIds,
    },
    sink: {
      onToken: (choice) => {
        pending[b]!.push(choice.id);
        return false;
      },
      onFinish: (_reason, error) => {
        ended[b] = true;
        failure ??= error ?? null;
      },
    },
  }));
  // By default room for every row's whole sequence (nothing waits for blocks, nothing is computed twice)
  // within a share of the memory; the pool is made uninitialised, so on the CPU untouched blocks cost nothing.
  const kv = kvBlocks(model.config, model.dtype, {
    mib: options.kvCacheMib ?? null,
    wanted: prompts.reduce((sum, p) => sum + blocksFor(p.length + maxNew + 1), 0),
    minimum: blocksFor(longest + maxNew + 1),
  });
  if (kv.blocks < kv.minimum)
    throw new UserError(
      `generate: kvCacheMib ${options.kvCacheMib} is too small: the longest row's ${longest + maxNew} positions need ${Math.ceil((kv.minimum * blockBytes(model.config, model.dtype)) / 2 ** 20)} MiB`,
    );
  const core = new EngineCore(model, {
    maxBatch: prompts.length,
    maxQueue: 0,
    stopIds: [],
    metrics: new ServerMetrics(),
    kvBlocks: kv.blocks,
    maxPositions: longest + maxNew,
  });
  try {
    core.submit(specs);
    while (!ended.every(Boolean) || pending.some((q) => q.length > 0)) {
      if (pending.every((q) => q.length === 0)) {
        const forwards = core.forwards;
        core.runOnce();
        if (failure) throw failure;
        // An iteration that ran no forward would run none again: fail rather than spin.
        if (core.forwards === forwards && !ended.every(Boolean))
          throw new Error('generate: the engine stopped making progress');
        continue;
      }
      const emitted = pending.map((q, b) => {
        const id = q.shift();
        if (id === undefined) return null;
        produced[b]! += 1;
        return id;
      });
      options.onStep?.(Math.max(...produced));
      yield emitted;
    }
  } finally {
    core.close();
  }
}
