// Log-probabilities of a prompt's own tokens (echo with logprobs, as OpenAI's legacy completions and vLLM
// return them, and as lm-evaluation-harness reads them): token j's log p(x_j | x_<j) from the last decoder
// layer's output at position j - 1 (kept with the KV blocks, so cached prefixes are scored too), with the
// top alternatives there. The first token has none (null).
import { tensor } from '../tensor/create.js';
import { tidy } from '../tensor/scope.js';
import type { Tensor } from '../tensor/tensor.js';
import type { CausalLM } from '../models/causal-lm.js';

export interface PromptScore {
  id: number;
  /** log p(id | the tokens before it); null for the first token. */
  logprob: number | null;
  /** The most likely tokens at this position, [id, logprob], most likely first; null for the first token. */
  top: [number, number][] | null;
}

/** One prompt to score: the rows of the hidden states of its positions 0 .. P-2, and its tokens. */
export interface PromptToScore {
  rows: number[];
  ids: number[];
  /** Scores already known (from cached blocks), by position; those positions are not computed again. */
  known?: (PromptScore | null)[];
  /** Alternatives to report per position. */
  top: number;
}

/** Positions whose logits one pass of the LM head makes at most ([n, V] float32 at a time). */
const CHUNK = 256;

/** Scores prompts from last hidden states `hidden` [n, H] (before the final norm). */
export function scorePrompts(model: CausalLM, hidden: Tensor, prompts: PromptToScore[]): PromptScore[][] {
  // Every scored position: (its row in `hidden`, the token it predicts, its prompt).
  const positions: number[] = [];
  const targets: number[] = [];
  const owner: number[] = [];
  const at: number[] = [];
  prompts.forEach((p, i) => {
    for (let j = 1; j < p.ids.length; j++) {
      if (p.known?.[j]) continue;
      at.push(j);
      positions.push(p.rows[j - 1]!);
      targets.push(p.ids[j]!);
      owner.push(i);
    }
  });
  const k = Math.max(0, ...prompts.map((p) => p.top));
  const logprobs = new Float32Array(positions.length);
  const topValues = new Float32Array(positions.length * k);
  const topIds: number[] = [];
  for (let from = 0; from < positions.length; from += CHUNK) {
    const n = Math.min(CHUNK, positions.length - from);
    tidy(() => {
      const at = tensor(positions.slice(from, from + n), { dtype: 'int64', device: hidden.device }); // [n]
      const logits = model.head(hidden.indexSelect(0, at)); // [n, V] float32
      const norm = logits.logsumexp(-1, true); // [n, 1]
      const want = tensor(
        targets.slice(from, from + n).map((t) => [t]),
        { dtype: 'int64', device: hidden.device },
      ); // [n, 1]
      logprobs.set(logits.gather(1, want).sub(norm).reshape(-1).toFloat32Array(), from); // [n]
      if (k > 0) {
        const best = logits.topk(k, -1); // values, indices [n, k]
        topValues.set(best.values.sub(norm).reshape(-1).toFloat32Array(), from * k);
        topIds.push(...best.indices.reshape(-1).toNumbers());
      }
    });
  }
  const out: PromptScore[][] = prompts.map((p) =>
    p.ids.map((id, j) => {
      const known = j === 0 ? null : p.known?.[j];
      return known ? { id, logprob: known.logprob, top: known.top!.slice(0, p.top) } : { id, logprob: null, top: null };
    }),
  );
  positions.forEach((_, i) => {
    const p = prompts[owner[i]!]!;
    const top: [number, number][] = [];
    for (let r = 0; r < p.top; r++) top.push([topIds[i * k + r]!, topValues[i * k + r]!]);
    out[owner[i]!]![at[i]!] = { id: targets[i]!, logprob: logprobs[i]!, top };
  });
  return out;
}
