// Per-request token choice. Greedy rows take the device's argmax (exactly as `generate` does); sampled
// rows draw in JavaScript from their own seeded generator, so a request's seed reproduces its output
// whatever else shares the batch. Warpers in Hugging Face's order: temperature, top-k, top-p.
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
}

export interface TokenChoice {
  id: number;
  /** log p(id) under the model (before temperature and filters), when logprobs were asked for. */
  logprob?: number;
  /** The most likely alternatives, [id, logprob], most likely first. */
  top?: [number, number][];
}

export class RowSampler {
  private readonly rng: Rng;

  constructor(readonly params: SamplingParams) {
    this.rng = new Rng(params.seed ?? randomInt(2 ** 32));
  }

  /** Whether pick() needs the row's log-probabilities. */
  get needsLogProbs(): boolean {
    return this.params.temperature > 0 || this.params.logprobs !== null;
  }

  /** greedyId: the argmax of the row; logp: its log-softmax [V] when needsLogProbs. */
  pick(greedyId: number, logp: Float32Array | null): TokenChoice {
    const p = this.params;
    const id = p.temperature > 0 ? this.sample(logp!) : greedyId;
    if (p.logprobs === null || !logp) return { id };
    return { id, logprob: logp[id]!, top: p.logprobs > 0 ? topN(logp, p.logprobs) : [] };
  }

  private sample(logp: Float32Array): number {
    const p = this.params;
    const k = p.topK !== null && p.topK > 0 && p.topK < logp.length ? p.topK : null;
    const nucleus = p.topP !== null && p.topP < 1;
    // Candidates as [id, logprob], most likely first: the k best (a partial selection), every token
    // sorted when top_p needs the order, or every token as it is.
    let cand: [number, number][];
    if (k !== null && k <= 256) cand = topN(logp, k);
    else {
      cand = [];
      for (let i = 0; i < logp.length; i++) if (logp[i]! > Number.NEGATIVE_INFINITY) cand.push([i, logp[i]!]);
      if (k !== null || nucleus) cand.sort((a, b) => b[1] - a[1]);
      if (k !== null) cand = cand.slice(0, k);
    }
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

/** The n most likely [id, logprob], most likely first. */
export function topN(logp: Float32Array, n: number): [number, number][] {
  const best: [number, number][] = [];
  for (let i = 0; i < logp.length; i++) {
    const v = logp[i]!;
    if (best.length === n && v <= best[n - 1]![1]) continue;
    let j = best.length === n ? n - 1 : best.length;
    if (best.length < n) best.push([i, v]);
    while (j > 0 && best[j - 1]![1] < v) {
      best[j] = best[j - 1]!;
      j--;
    }
    best[j] = [i, v];
  }
  return best;
}
