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

/** Where the examples of rows packing several of them are: per token, its example's number within the row (1,
 * 2, ...; 0 for padding) and its position within the example (positions restart at each example). */
export interface RowSegments {
  /** [B, T] int64 */
  segments: Tensor;
  /** [B, T] int64 */
  positions: Tensor;
}

/**
 * Which keys each query may attend to in rows that pack several examples: bool [B, 1, T, T], true = attend.
 * segments [B, T] numbers each token's example within its row (1, 2, ...; 0 = padding): a query sees the keys of
 * its own example up to itself (block-diagonal causal), within the sliding window if any; never another
 * example's. A query always sees itself (padding rows never become all -inf).
 */
export function segmentMask(segments: Tensor, slidingWindow: number | null): Tensor {
  const T = segments.size(1);
  const device = segments.device;
  const q = arange(0, T, 1, { device }).unsqueeze(1); // [T, 1]
  const k = arange(0, T, 1, { device }).unsqueeze(0); // [1, T]
  let allowed = k.le(q); // [T, T] causal
  // Within one example, index distance is position distance: the window applies as it does unpacked.
  if (slidingWindow !== null) allowed = allowed.logicalAnd(q.sub(k).lt(slidingWindow));
  const same = segments.unsqueeze(2).eq(segments.unsqueeze(1)); // [B, T, T] same example
  const realKeys = segments.ne(0).unsqueeze(1); // [B, 1, T]
  return allowed.unsqueeze(0).logicalAnd(same).logicalAnd(realKeys).logicalOr(k.eq(q).unsqueeze(0)).unsqueeze(1); // [B, 1, T, T]
}
