// Choosing the next token from logits [B, V], with Hugging Face's warpers in their order:
// repetition penalty, temperature, top-k, top-p; temperature 0 is greedy.
import { arange } from '../tensor/create.js';
import { multinomial, where } from '../tensor/ops.js';
import type { Tensor } from '../tensor/tensor.js';

export interface SamplingOptions {
  /** 0 = greedy (argmax). */
  temperature: number;
  topK: number | null;
  topP: number | null;
  /** > 1 discourages tokens already in the sequence (HF: divide positive logits, multiply negative). */
  repetitionPenalty: number | null;
}

export function penalizeRepetition(logits: Tensor, seen: Tensor, penalty: number): Tensor {
  const score = logits.gather(1, seen); // [B, L]
  const adjusted = where(score.lt(0), score.mul(penalty), score.div(penalty));
  return logits.scatter(1, seen, adjusted); // [B, V]
}

export function topKFilter(logits: Tensor, k: number): Tensor {
  if (k >= logits.size(-1)) return logits;
  const kth = logits.topk(k, -1).values.narrow(-1, k - 1, 1); // [B, 1]
  return logits.maskedFill(logits.lt(kth), Number.NEGATIVE_INFINITY);
}

export function topPFilter(logits: Tensor, p: number): Tensor {
  const { values, indices } = logits.sort(-1, false); // ascending
  const cumulative = values.softmax(-1).cumsum(-1); // [B, V]
  const V = logits.size(-1);
  const notMostLikely = arange(0, V, 1, { device: logits.device }).ne(V - 1); // [V]: the last is kept
  const remove = cumulative.le(1 - p).logicalAnd(notMostLikely); // [B, V] sorted order
  const removeByToken = remove.scatter(1, indices, remove); // back to vocab order
  return logits.maskedFill(removeByToken, Number.NEGATIVE_INFINITY);
}

/** Next token ids [B] for logits [B, V]; `seen` [B, L] holds each row's tokens so far. */
export function sampleNext(logits: Tensor, seen: Tensor, o: SamplingOptions): Tensor {
  let z = logits;
  if (o.repetitionPenalty !== null && o.repetitionPenalty !== 1) z = penalizeRepetition(z, seen, o.repetitionPenalty);
  if (o.temperature === 0) return z.argmax(-1);
  z = z.div(o.temperature);
  if (o.topK !== null && o.topK > 0) z = topKFilter(z, o.topK);
  if (o.topP !== null && o.topP < 1) z = topPFilter(z, o.topP);
  return multinomial(z.softmax(-1), 1).squeeze(1);
}
