// Attention masks and positions for padded batches, KV caches and sliding windows.
import { arange } from '../tensor/create.js';
import type { Tensor } from '../tensor/tensor.js';

/**
 * Which keys each query may attend to: bool [B, 1, T, S], true = attend.
 * keyMask [B, S] marks real tokens (1) and padding (0) over the whole key sequence (cache included);
 * the T queries are the last T of the S positions. A query always sees itself, so rows of padding
 * never become all -inf (whose NaN would leak into real rows through the values).
 */
export function attentionMask(keyMask: Tensor, queryLen: number, slidingWindow: number | null): Tensor {
  const S = keyMask.size(1);
  const past = S - queryLen;
  const device = keyMask.device;
  const q = arange(past, S, 1, { device }).unsqueeze(1); // [T, 1] absolute query index
  const k = arange(0, S, 1, { device }).unsqueeze(0); // [1, S]
  let allowed = k.le(q).unsqueeze(0); // [1, T, S] causal
  if (slidingWindow !== null) {
    // The window counts the tokens' positions, not places on the key axis: masked gaps (the server's
    // cached prefixes before left-padded fresh tokens) lie between them.
    const pos = positionsFromMask(keyMask); // [B, S]
    const qPos = pos.narrow(1, past, queryLen).unsqueeze(2); // [B, T, 1]
    allowed = allowed.logicalAnd(qPos.sub(pos.unsqueeze(1)).lt(slidingWindow)); // [B, T, S]
  }
  const keys = keyMask.ne(0).unsqueeze(1); // [B, 1, S]
  return allowed.logicalAnd(keys).logicalOr(k.eq(q).unsqueeze(0)).unsqueeze(1); // [B, 1, T, S]
}

/** Position ids that skip padding: the i-th real token of a row gets position i. keyMask [B, S] -> [B, S]. */
export function positionsFromMask(keyMask: Tensor): Tensor {
  return keyMask.to('int64').cumsum(1).sub(1).clamp(0, null);
}
