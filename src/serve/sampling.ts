// Per-sequence token choice, for the server and for generate() alike. Greedy rows without logits processing
// take the device's argmax; the others get their row of logits on the host, processed there (Hugging Face's
// repetition penalty, logit_bias, the OpenAI penalties, min_tokens, a structured-output constraint) and
// chosen greedily or drawn from their own seeded generator, so a sequence's seed reproduces its output
// whatever else shares the batch. Warpers in Hugging Face's order: temperature, top-k, top-p. Reported
// log-probabilities are the model's own (log-softmax of the raw logits), as OpenAI and vLLM report them.
import { randomInt } from 'node:crypto';
import { Rng } from '../util/random.js';

export interface SamplingParams {
  /** 0 = greedy. */
  temperature: number;
  topP: number | null;
  topK: number | null;
  seed: number | null;
  /** How many alternatives to report with each token's log-probability; null = no log-probabilities. */
  logprobs: number | null;
  /** Hugging Face's (and vLLM's) repetition penalty over the prompt and the tokens generated so far: a seen
   * token's logit is divided by it when positive, multiplied when negative. 1 or null: none. */
  repetitionPenalty?: number | null;
  /** OpenAI's penalties over the tokens generated so far: logit -= count · frequency + (count > 0) · presence. */
  frequencyPenalty?: number;
  presencePenalty?: number;
  /** Added to these ids' logits before choosing (OpenAI's logit_bias, -100..100). */
  logitBias?: Map<number, number> | null;
  /** Ids that end the sequence besides the model's EOS (vLLM's stop_token_ids); they are not text. */
  stopTokenIds?: number[];
  /** EOS and stop_token_ids cannot be chosen, and stop strings do not match, before this many tokens. */
  minTokens?: number;
  /** EOS does not end the sequence (vLLM's ignore_eos): generation runs to max_tokens. */
  ignoreEos?: boolean;
}

/** A per-row constraint on the next token (structured output): masks logits, follows the chosen ids.
 * A method that throws fails its row only. */
export interface TokenConstraint {
  /** Sets the logits of the tokens not allowed next to -Infinity (the stop ids once the text is complete). */
  mask(logits: Float32Array): void;
  /** The row chose `id` (one that mask() left allowed, or an end id when it allowed nothing). */
  accept(id: number): void;
  /** The output is complete (a stop id was accepted): the row ends with finish_reason 'stop', even
   * under ignore_eos, as accept() may not be called again. */
  readonly finished: boolean;
  /** Frees what the constraint holds (called once when the row ends). */
  dispose(): void;
}

export interface TokenChoice {
  id: number;
  /** log p(id) under the model (before temperature and filters), when logprobs were asked for. */
  logprob?: number;
  /** The most likely alternatives, [id, logprob], most likely first. */
  top?: [number, number][];
}

export interface RowSamplerContext {
  /** The model's EOS ids (masked before min_tokens). */
  eosIds?: number[];
  constraint?: TokenConstraint | null;
  /** The prompt's tokens (the repetition penalty counts them as seen). */
  prompt?: number[];
}

export class RowSampler {
  private readonly rng: Rng;
  /** Tokens chosen so far. */
  private generated = 0;
  /** How often each id was chosen (only with a penalty). */
  private readonly counts: Map<number, number> | null;
  /** The prompt's tokens and those chosen so far (only with a repetition penalty). */
  private readonly seen: Set<number> | null;
  private readonly endIds: number[];
  private readonly penalised: boolean;
  private readonly constraint: TokenConstraint | null;

  constructor(
    readonly params: SamplingParams,
    context: RowSamplerContext = {},
  ) {
    this.rng = new Rng(params.seed ?? randomInt(2 ** 32));
    this.penalised = (params.frequencyPenalty ?? 0) !== 0 || (params.presencePenalty ?? 0) !== 0;
    this.counts = this.penalised ? new Map() : null;
    const repetition = params.repetitionPenalty != null && params.repetitionPenalty !== 1;
    this.seen = repetition ? new Set(context.prompt ?? []) : null;
    this.endIds = [...(context.eosIds ?? []), ...(params.stopTokenIds ?? [])];
    this.constraint = context.constraint ?? null;
  }

  /** Whether the chosen token depends on more than the raw argmax (processing on the host). */
  private get processes(): boolean {
    const p = this.params;
    return (
      this.penalised ||
      this.seen !== null ||
      this.constraint !== null ||
      (p.logitBias != null && p.logitBias.size > 0) ||
      this.generated < (p.minTokens ?? 0)
    );
  }

  /** Whether pick() needs the row's logits. */
  get needsLogits(): boolean {
    return this.params.temperature > 0 || this.params.logprobs !== null || this.processes;
  }

  /** greedyId: the argmax of the row's raw logits; logits: the row [V] when needsLogits. */
  pick(greedyId: number, logits: Float32Array | null): TokenChoice {
    const p = this.params;
    let id = greedyId;
    if (logits && (p.temperature > 0 || this.processes)) {
      const scores = this.processes ? this.process(logits) : logits;
      id = p.temperature > 0 ? this.sample(scores) : argmax(scores);
      // Everything masked (a constraint that allows nothing but a masked stop id): end the row.
      if (id < 0) id = this.endIds[0] ?? greedyId;
    }
    this.generated += 1;
    if (this.counts) this.counts.set(id, (this.counts.get(id) ?? 0) + 1);
    this.seen?.add(id);
    this.constraint?.accept(id);
    if (p.logprobs === null || !logits) return { id };
    const norm = logSumExp(logits);
    const top: [number, number][] = p.logprobs > 0 ? topN(logits, p.logprobs).map(([t, v]) => [t, v - norm]) : [];
    return { id, logprob: logits[id]! - norm, top };
  }

  /** Whether the constraint's output is complete (the row must end). */
  get finished(): boolean {
    return this.constraint?.finished ?? false;
  }

  /** Frees the constraint (the row ended). */
  dispose(): void {
    this.constraint?.dispose();
  }

  /** A processed copy of the raw logits: the repetition penalty, bias, penalties, stop ids held back, the
   * constraint's mask. */
  private process(logits: Float32Array): Float32Array {
    const p = this.params;
    const out = Float32Array.from(logits);
    if (this.seen) {
      const r = p.repetitionPenalty!;
      for (const id of this.seen) if (id < out.length) out[id] = out[id]! < 0 ? out[id]! * r : out[id]! / r;
    }
    if (p.logitBias) for (const [id, bias] of p.logitBias) if (id < out.length) out[id]! += bias;
    if (this.counts) {
      const f = p.frequencyPenalty ?? 0;
      const pres = p.presencePenalty ?? 0;
      for (const [id, n] of this.counts) out[id]! -= n * f + pres;
    }
    if (this.generated < (p.minTokens ?? 0))
      for (const id of this.endIds) if (id < out.length) out[id] = Number.NEGATIVE_INFINITY;
    this.constraint?.mask(out);
    return out;
  }

  /** A draw from softmax(scores / T) after top-k and top-p; -1 when every score is -Infinity. */
  private sample(scores: Float32Array): number {
    const p = this.params;
    const k = p.topK !== null && p.topK > 0 && p.topK < scores.length ? p.topK : null;
    const nucleus = p.topP !== null && p.topP < 1;
    // Candidates as [id, score], most likely first: the k best (a partial selection), every token
    // sorted when top_p needs the order, or every token as it is.
    let cand: [number, number][];
    if (k !== null && k <= 256) cand = topN(scores, k).filter(([, v]) => v > Number.NEGATIVE_INFINITY);
    else {
      cand = [];
      for (let i = 0; i < scores.length; i++) if (scores[i]! > Number.NEGATIVE_INFINITY) cand.push([i, scores[i]!]);
      if (k !== null || nucleus) cand.sort((a, b) => b[1] - a[1]);
      if (k !== null) cand = cand.slice(0, k);
    }
    if (cand.length === 0) return -1;
    let max = Number.NEGATIVE_INFINITY;
    for (const [, v] of cand) max = Math.max(max, v);
    let weights = cand.map(([, v]) => Math.exp((v - max) / p.temperature));
    let total = weights.reduce((a, b) => a + b, 0);
    if (nucleus) {
      // Keep the smallest prefix whose probability reaches top_p (the most likely token always).
      let mass = 0;
      let keep = 0;
      while (keep < cand.length && mass < p.topP! * total) mass += weights[keep++]!;
      cand = cand.slice(0, Math.max(1, keep));
      weights = weights.slice(0, cand.length);
      total = weights.reduce((a, b) => a + b, 0);
    }
    let u = (this.rng.next() / 2 ** 32) * total;
    for (let i = 0; i < cand.length; i++) {
      u -= weights[i]!;
      if (u < 0) return cand[i]![0];
    }
    return cand[cand.length - 1]![0];
  }
}

/** The first index of the largest value; -1 when every value is -Infinity (or NaN). */
export function argmax(v: Float32Array): number {
  let best = -1;
  let max = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < v.length; i++) {
    if (v[i]! > max) {
      max = v[i]!;
      best = i;
    }
  }
  return best;
}

/** log Σ exp(v), computed stably. */
export function logSumExp(v: Float32Array): number {
  let max = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < v.length; i++) if (v[i]! > max) max = v[i]!;
  if (max === Number.NEGATIVE_INFINITY) return max;
  let sum = 0;
  for (let i = 0; i < v.length; i++) sum += Math.exp(v[i]! - max);
  return max + Math.log(sum);
}

/** The n most likely [id, value], most likely first. */
export function topN(v: Float32Array, n: number): [number, number][] {
  const best: [number, number][] = [];
  for (let i = 0; i < v.length; i++) {
    const x = v[i]!;
    if (best.length === n && x <= best[n - 1]![1]) continue;
    let j = best.length === n ? n - 1 : best.length;
    if (best.length < n) best.push([i, x]);
    while (j > 0 && best[j - 1]![1] < x) {
      best[j] = best[j - 1]!;
      j--;
    }
    best[j] = [i, x];
  }
  return best;
}
