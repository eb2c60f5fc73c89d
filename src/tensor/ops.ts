// Free functions over several tensors: joins, selection, losses, attention, embedding.
import { native } from './native.js';
import { REDUCTION } from './op-codes.js';
import { Tensor } from './tensor.js';

export function cat(ts: Tensor[], dim = 0): Tensor {
  return new Tensor(
    native.cat(
      ts.map((t) => t.id),
      dim,
    ),
  );
}
export function stack(ts: Tensor[], dim = 0): Tensor {
  return new Tensor(
    native.stack(
      ts.map((t) => t.id),
      dim,
    ),
  );
}

/** cond ? a : b, elementwise with broadcasting; a or b may be a number. */
export function where(cond: Tensor, a: Tensor | number, b: Tensor | number): Tensor {
  const scalars = (typeof a === 'number' ? 1 : 0) | (typeof b === 'number' ? 2 : 0);
  return new Tensor(native.where(cond.id, typeof a === 'number' ? a : a.id, typeof b === 'number' ? b : b.id, scalars));
}

/** x Wᵀ + b, with W: [out, in]. */
export function linear(x: Tensor, weight: Tensor, bias?: Tensor | null): Tensor {
  return new Tensor(native.linear(x.id, weight.id, bias ? bias.id : null));
}

/** Members' low-rank modules: A[g] [r, in] and B[g] [out, r] float32 (null: member g has none), and
 * each one's scaling s (LoRA's α/r). */
export interface LowRankMembers {
  A: (Tensor | null)[];
  B: (Tensor | null)[];
  scaling: number[];
}

const idOf = (t: Tensor | null | undefined) => (t ? t.id : null);

/** The shrink of each slot through its own member's A (native/kernels/low_rank_rows.cc):
 * h[i, :r] = weights[i] · s · A x[inRows[i]] for x [n, in] float32 and members [m] int64 -> h [m, R] float32
 * (R the largest rank; zeros past a member's own, and for members without modules). inRows default to slot i
 * reading row i, weights to 1. */
export function lowRankShrink(
  x: Tensor,
  members: Tensor,
  modules: Pick<LowRankMembers, 'A' | 'scaling'>,
  o: { inRows?: Tensor; weights?: Tensor } = {},
): Tensor {
  return new Tensor(
    native.lowRankShrink(x.id, members.id, idOf(o.inRows), idOf(o.weights), modules.A.map(idOf), modules.scaling),
  );
}

/** The expand of each slot's h through its own member's B: out[outRows[i]] += B h[i, :r] -> [outCount, out]
 * float32 (outRows default to slot i writing row i, outCount = m). With base [nb, out] float32 (no outRows):
 * out[i] = base[baseRows[i]] (default row i) + the delta, times columnScales[members[i]] ([G, out] float32)
 * when given: a frozen projection's output adapted in the same call, as (base + delta) · scale composed. */
export function lowRankExpand(
  h: Tensor,
  members: Tensor,
  modules: Pick<LowRankMembers, 'B'>,
  o: { outRows?: Tensor; outCount?: number; base?: Tensor; baseRows?: Tensor; columnScales?: Tensor } = {},
): Tensor {
  return new Tensor(
    native.lowRankExpand(
      h.id,
      members.id,
      idOf(o.outRows),
      o.outCount ?? members.size(0),
      modules.B.map(idOf),
      idOf(o.base),
      idOf(o.baseRows),
      idOf(o.columnScales),
    ),
  );
}

/** Each slot through its own member's modules: out[outRows[i]] += weights[i] · s · B (A x[inRows[i]]), for
 * x [n, in] float32 and members [m] int64: lowRankShrink then lowRankExpand (their options). */
export function lowRankByMember(
  x: Tensor,
  members: Tensor,
  modules: LowRankMembers,
  o: {
    inRows?: Tensor;
    outRows?: Tensor;
    weights?: Tensor;
    outCount?: number;
    base?: Tensor;
    baseRows?: Tensor;
    columnScales?: Tensor;
  } = {},
): Tensor {
  const { A, B, scaling } = modules;
  if (B.length !== A.length || scaling.length !== A.length)
    throw new Error('lowRankByMember: A, B and scales differ in length');
  A.forEach((a, g) => {
    const b = B[g];
    if (!a !== !b || (a && b && b.size(1) !== a.size(0)))
      throw new Error(`lowRankByMember: member ${g}'s A and B do not make a pair (A [r, in], B [out, r])`);
  });
  const h = lowRankShrink(x, members, modules, o); // [m, R]
  try {
    return lowRankExpand(h, members, modules, o); // [outCount, out]
  } finally {
    h.dispose();
  }
}

/** silu(gate) · up, same shapes; its backward keeps gate and up only (one activation fewer than composed). */
export function swiglu(gate: Tensor, up: Tensor): Tensor {
  return new Tensor(native.swiglu(gate.id, up.id));
}

/**
 * Σᵢ cross-entropy of logits [N, C] against targets [N] (every id in [0, C)), float32 []: the fused kernel of
 * native/kernels/fused.cc, whose backward is one pass g·(softmax − onehot) instead of log_softmax's and nll_loss's.
 */
export function sumCrossEntropy(logits: Tensor, target: Tensor): Tensor {
  return new Tensor(native.sumCrossEntropy(logits.id, target.id));
}

export function embedding(weight: Tensor, ids: Tensor): Tensor {
  return new Tensor(native.embedding(weight.id, ids.id));
}

export type Reduction = 'mean' | 'sum' | 'none';
/** Cross-entropy of logits [N, C] against class ids [N]; targets equal to ignoreIndex score nothing. */
export function crossEntropy(
  logits: Tensor,
  target: Tensor,
  opts: { ignoreIndex?: number; reduction?: Reduction; labelSmoothing?: number } = {},
): Tensor {
  return new Tensor(
    native.crossEntropy(
      logits.id,
      target.id,
      opts.ignoreIndex ?? -100,
      REDUCTION[opts.reduction ?? 'mean']!,
      opts.labelSmoothing ?? 0,
    ),
  );
}

/** Scaled dot-product attention, q [B,H,T,D], k/v [B,H,S,D]. `mask` (bool, true = may attend) broadcasts
 * to [B,H,T,S]; `causal` instead applies the usual lower-triangular mask (T = S). libtorch's fused
 * kernel where the version has it (2.x), the plain math otherwise. */
export function scaledDotProductAttention(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  opts: { mask?: Tensor | null; causal?: boolean; dropout?: number } = {},
): Tensor {
  return new Tensor(
    native.sdpa(q.id, k.id, v.id, opts.mask ? opts.mask.id : null, opts.dropout ?? 0, opts.causal ?? false),
  );
}

/** A decode step's attention over paged KV blocks, read in place (native/kernels/decode_attention.cc): q [B, H, 1, D],
 * kPool and vPool [N, Hkv, bs, D], tables int64 [B, M] (each row's blocks in order), lens int64 [B] (its
 * keys, the new one included); window > 0 keeps the last `window` keys. Float32 on the CPU with the small-row
 * kernel on (runtime info's smallGemm is not 'off'). */
export function pagedAttention(
  q: Tensor,
  kPool: Tensor,
  vPool: Tensor,
  tables: Tensor,
  lens: Tensor,
  opts: { window: number | null; scale: number },
): Tensor {
  return new Tensor(native.pagedAttention(q.id, kPool.id, vPool.id, tables.id, lens.id, opts.window ?? 0, opts.scale));
}

/** n samples per row of probs [.., C] (sampled with the seeded generator). */
export function multinomial(probs: Tensor, n: number, replacement = false): Tensor {
  return new Tensor(native.multinomial(probs.id, n, replacement));
}

export function bincount(x: Tensor, minlength = 0, weights?: Tensor): Tensor {
  return new Tensor(native.bincount(x.id, weights ? weights.id : null, minlength));
}
