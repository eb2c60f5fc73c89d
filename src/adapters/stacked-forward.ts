// The forward of rows of different adapters through their stacked modules (adapter-stack.ts), at
// inference on a few tokens: each projection's LoRA of every row in one call (each row through its own
// member), and the feed-forward block of every row (base model, LoRA/DoRA, MixLoRA/MixDoRA experts) as one
// list of (token, member, weight) slots: a plain row is one slot of weight 1, a MixLoRA token its routed
// experts. Equal to the per-range path up to rounding (the test compares them).
import { tensor, zeros } from '../tensor/create.js';
import { cat, linear, lowRankByMember } from '../tensor/ops.js';
import type { Tensor } from '../tensor/tensor.js';
import type { Activation } from '../models/config.js';
import { frozenLinear } from '../models/frozen-linear.js';
import { frozenGateUp, gated } from '../models/hooks.js';
import { linearOf, type LayerWeights, type Linear } from '../models/weights.js';
import type { Adapter } from './adapter.js';
import type { AdapterStack, StackedModule } from './adapter-stack.js';
import type { RowRange } from './batch.js';
import { routerProbs } from './moe.js';
import { route, type RouterOutput } from './routing.js';
import { doraOutput } from './lora.js';

/** One MixLoRA range's router output (the caller records it as the per-range path does). */
export interface StackedRouting extends RouterOutput {
  adapter: Adapter;
}

/** base + delta, or with DoRA members m/‖W + sBA‖ ⊙ (W x + delta) + b, in base's dtype; base [m, out]. */
function adaptRows(s: StackedModule, base: Tensor, delta: Tensor, member: Tensor, lin: Linear): Tensor {
  if (!s.scales) return base.dtype === 'float32' ? base.add(delta) : base.add(delta.to(base.dtype));
  const scale = s.scales.indexSelect(0, member); // [m, out]
  return doraOutput(base, delta, scale, lin.bias).to(base.dtype); // [m, out]
}

/**
 * Every slot's adapted projection [m, out] in base's dtype: slot i reads row inRows[i] of x32 [n, in]
 * (default i) and adapts row baseRows[i] of the frozen output base (default i) with its member's modules.
 * Without a bias on a float32 base, one call does it all (the base rows and DoRA's scales inside
 * lowRankByMember, with the same float32 operations); else the delta and adaptRows.
 */
function adaptSlots(
  s: StackedModule,
  x32: Tensor,
  base: Tensor,
  member: Tensor,
  lin: Linear,
  rows: { inRows?: Tensor; baseRows?: Tensor } = {},
): Tensor {
  if (!lin.bias && base.dtype === 'float32')
    return lowRankByMember(x32, member, s, { ...rows, base, columnScales: s.scales ?? undefined }); // [m, out]
  const delta = lowRankByMember(x32, member, s, { inRows: rows.inRows }); // [m, out]
  return adaptRows(s, rows.baseRows ? base.indexSelect(0, rows.baseRows) : base, delta, member, lin);
}

/** The adapted projection of x [B, T, in] given its frozen output base [B, T, out]; member [B·T] int64
 * is each token's member (its row's adapter). */
export function stackedProject(s: StackedModule, x: Tensor, base: Tensor, member: Tensor, lin: Linear): Tensor {
  const [B, T, inF] = x.shape as [number, number, number];
  const x32 = x.reshape(B * T, inF).to('float32'); // [n, in]
  return adaptSlots(s, x32, base.reshape(B * T, -1), member, lin).view(B, T, -1); // [B, T, out]
}

interface Slots {
  /** [m] int64: the token (row of the flattened batch) of each slot. */
  tokens: Tensor;
  /** [m] int64: its feed-forward member. */
  members: Tensor;
  /** [m] float32: its weight in the token's output. */
  weights: Tensor;
}

/** Slots as host numbers, before they become tensors. */
interface HostSlots {
  tokens: number[];
  members: number[];
  weights: number[];
}

/**
 * Top-k routing of a few tokens on the host from the router's logits, appended to `out`: topKRouting's
 * slots in its order (token by token, each token's k experts by descending probability, i.e. logit, ties
 * to the lower expert), padding tokens (valid 0) dropped as realSlots drops them. The weights are the
 * chosen experts' softmax probabilities renormalised to sum to 1, in which the softmax's denominator
 * cancels: exp(lᵢ − l_max) / Σ_chosen exp(l − l_max), in double, rounded to float32 (within a few float32
 * ulps of the tensor path's). One read of the logits instead of a softmax and a dozen tensor ops per range
 * and layer, which at a decode step cost more than the routing itself. logits [n, E] row-major; token i is
 * row first + i; expert e is member member0 + e.
 */
function hostTopK(
  logits: Float32Array,
  E: number,
  k: number,
  valid: number[] | null,
  first: number,
  member0: number,
  out: HostSlots,
): void {
  const n = logits.length / E;
  const chosen: number[] = [];
  for (let i = 0; i < n; i++) {
    if (valid && valid[i] === 0) continue;
    const row = i * E;
    chosen.length = 0;
    for (let j = 0; j < k; j++) {
      let best = -1;
      for (let e = 0; e < E; e++)
        if (!chosen.includes(e) && (best < 0 || logits[row + e]! > logits[row + best]!)) best = e;
      chosen.push(best);
    }
    const top = logits[row + chosen[0]!]!;
    const exps = chosen.map((e) => Math.exp(logits[row + e]! - top));
    const sum = exps.reduce((a, b) => a + b, 0);
    chosen.forEach((e, j) => {
      out.tokens.push(first + i);
      out.members.push(member0 + e);
      out.weights.push(Math.fround(exps[j]! / sum));
    });
  }
}

/** Every token's slots: a plain (or base) row's tokens one each, weight 1; a MixLoRA range's tokens
 * their routed experts. x [n, H] flattened rows of T tokens; valid(range) its real tokens or null.
 * keepRouting false: the caller keeps no router output (no load-balance loss or statistics), which lets
 * top-k routing run on the host. */
function slotsOf(
  stack: AdapterStack,
  layer: number,
  x: Tensor,
  T: number,
  ranges: RowRange[],
  valid: (range: RowRange) => Tensor | null,
  keepRouting: boolean,
): { slots: Slots; routing: StackedRouting[] } {
  const device = x.device;
  const plain: HostSlots = { tokens: [], members: [], weights: [] };
  const parts: ({ host: HostSlots } | { tensors: Slots })[] = [];
  // The last part when it is host numbers, else a new one: consecutive host parts become one tensor each.
  const hostPart = (): HostSlots => {
    const last = parts[parts.length - 1];
    if (last && 'host' in last) return last.host;
    const host: HostSlots = { tokens: [], members: [], weights: [] };
    parts.push({ host });
    return host;
  };
  const routing: StackedRouting[] = [];
  for (const range of ranges) {
    const moe = range.adapter?.layers[layer]?.moe;
    const first = range.start * T;
    if (!moe) {
      const member = stack.expertMember(range.adapter);
      for (let t = first; t < first + range.count * T; t++) {
        plain.tokens.push(t);
        plain.members.push(member);
        plain.weights.push(1);
      }
      continue;
    }
    const xr = x.narrow(0, first, range.count * T); // [b·T, H]
    const seqValid = valid(range);
    const member0 = stack.expertMember(range.adapter);
    if (!keepRouting && moe.settings.routingStrategy === 'mixlora') {
      const logits = linear(xr.to('float32'), moe.router); // [b·T, E], as routerProbs computes them
      const valids = seqValid?.toNumbers() ?? null;
      hostTopK(logits.toFloat32Array(), logits.size(1), moe.settings.topK, valids, first, member0, hostPart());
      continue;
    }
    const { logits, probs } = routerProbs(xr, moe); // [b·T, E]
    const routed = route(probs, moe.settings, { rows: range.count, len: T, valid: seqValid });
    const validIdx = seqValid ? seqValid.nonzero().squeeze(1) : null;
    routing.push({
      adapter: range.adapter!,
      logits: validIdx ? logits.indexSelect(0, validIdx) : logits,
      probs: validIdx ? probs.indexSelect(0, validIdx) : probs,
      counts: routed.counts,
    });
    parts.push({
      tensors: { tokens: routed.tokens.add(first), members: routed.experts.add(member0), weights: routed.weights },
    });
  }
  if (plain.tokens.length > 0) {
    const host = hostPart();
    host.tokens.push(...plain.tokens);
    host.members.push(...plain.members);
    host.weights.push(...plain.weights);
  }
  const all = parts.map((part): Slots => {
    if ('tensors' in part) return part.tensors;
    const { tokens, members, weights } = part.host;
    return {
      tokens: tensor(Int32Array.from(tokens), { dtype: 'int64', device }),
      members: tensor(Int32Array.from(members), { dtype: 'int64', device }),
      weights: tensor(Float32Array.from(weights), { device }),
    };
  });
  const join = (f: (s: Slots) => Tensor) => (all.length === 1 ? f(all[0]!) : cat(all.map(f), 0));
  return {
    slots: { tokens: join((s) => s.tokens), members: join((s) => s.members), weights: join((s) => s.weights) },
    routing,
  };
}

/** gate or up for every slot [m, I]: the frozen output of its token plus its member's delta. */
function slotProjection(s: StackedModule | null, x32: Tensor, frozen: Tensor, slots: Slots, lin: Linear): Tensor {
  if (!s) return frozen.indexSelect(0, slots.tokens); // [m, I]
  return adaptSlots(s, x32, frozen, slots.members, lin, { inRows: slots.tokens, baseRows: slots.tokens }); // [m, I]
}

/** The feed-forward block of every row, x [B, T, H] -> [B, T, H] in x's dtype, with separate gate and up
 * projections (not Phi-3's fused one). */
export function stackedMlp(
  stack: AdapterStack,
  layer: number,
  x: Tensor,
  w: LayerWeights,
  act: Activation,
  ranges: RowRange[],
  valid: (range: RowRange) => Tensor | null,
  keepRouting = true,
): { out: Tensor; routing: StackedRouting[] } {
  const [B, T, H] = x.shape as [number, number, number];
  const n = B * T;
  const xf = x.reshape(n, H); // [n, H]
  const x32 = xf.to('float32');
  const { slots, routing } = slotsOf(stack, layer, xf, T, ranges, valid, keepRouting);
  const frozen = frozenGateUp(xf, w); // [n, I] each
  const I = frozen.gate.size(1);
  const [g, u, d] = [linearOf(w, 'gate_proj'), linearOf(w, 'up_proj'), linearOf(w, 'down_proj')];
  const gate = slotProjection(stack.expertProjection(layer, 'gate_proj', g), x32, frozen.gate, slots, g); // [m, I]
  const up = slotProjection(stack.expertProjection(layer, 'up_proj', u), x32, frozen.up, slots, u); // [m, I]
  const h = gated(act, gate, up); // [m, I]
  const sd = stack.expertProjection(layer, 'down_proj', d);
  const weight = slots.weights.unsqueeze(1); // [m, 1]
  let out: Tensor; // [n, H] float32
  if (!d.bias && !sd?.scales) {
    // Σ wₛ W hₛ = W Σ wₛ hₛ: the frozen down projection once per token (as moe.ts's shared down).
    const h32 = h.to('float32'); // [m, I]
    const mixed = zeros([n, I], { device: x.device }).indexAdd(0, slots.tokens, h32.mul(weight)); // [n, I]
    out = frozenLinear(mixed.to(x.dtype), d).to('float32'); // [n, H]
    if (sd) {
      // Each slot's delta, weighted, summed into its token.
      const opts = { outRows: slots.tokens, weights: slots.weights.to('float32'), outCount: n };
      out = out.add(lowRankByMember(h32, slots.members, sd, opts)); // [n, H]
    }
  } else {
    // DoRA on down_proj or a bias: each slot's own down projection, then weighted per token.
    let y = frozenLinear(h, d); // [m, H]
    if (sd) y = adaptSlots(sd, h.to('float32'), y, slots.members, d);
    out = zeros([n, H], { device: x.device }).indexAdd(0, slots.tokens, y.to('float32').mul(weight)); // [n, H]
  }
  return { out: out.to(x.dtype).view(B, T, H), routing };
}
