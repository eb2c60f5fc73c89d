// The model's view of the paged KV cache (block-pool.ts) for one forward of the engine:
// - prefill: rows whose first `cached` positions are already in blocks (a prefix-cache hit, or the chunks
//   of a long prompt already prefilled) and whose `fresh` next tokens are computed now. The fresh tokens
//   are left-padded to the longest (N); the cached positions are gathered right-aligned before them
//   (C = the longest cached prefix), so row i's keys sit at [C - cached_i, C) and [C + N - fresh_i, C + N)
//   of the key axis with a mask over the gaps: the positions that the mask's running count gives are the
//   tokens' own, and a row with nothing cached and no padding is exactly a plain forward.
// - decode: one new token per row at position len_i; its key and value are written into its block, and
//   attention reads every row's blocks in place (native kernel), or, where that kernel does not apply
//   (not float32 on the CPU, soft-capped scores), the rows' keys gathered right-aligned with a key mask.
// Index tensors are made when the cache is made (under the forward's scope), shared by every layer.
import { tensor } from '../tensor/create.js';
import { cat, pagedAttention } from '../tensor/ops.js';
import { blasInfo } from '../tensor/runtime.js';
import type { Tensor } from '../tensor/tensor.js';
import type { ModelConfig } from '../models/config.js';
import type { AttentionCache } from '../models/kvcache.js';
import { BLOCK_SIZE, type BlockPool } from './block-pool.js';

export interface PrefillRow {
  /** The row's blocks, covering at least cached + fresh positions. */
  blocks: number[];
  /** Positions already in the blocks. */
  cached: number;
  /** Tokens computed now, at positions cached .. cached + fresh - 1. */
  fresh: number;
}

/** The flat row of `pool.hidden` (and of a layer's keys viewed [N · nKV · bs, D] for head h) of a position. */
const slotOf = (blocks: number[], p: number) => blocks[Math.floor(p / BLOCK_SIZE)]! * BLOCK_SIZE + (p % BLOCK_SIZE);
const keyRow = (blocks: number[], p: number, h: number, nKV: number) =>
  (blocks[Math.floor(p / BLOCK_SIZE)]! * nKV + h) * BLOCK_SIZE + (p % BLOCK_SIZE);

export interface PagedPrefill {
  cache: AttentionCache;
  /** [B, C + N] (1 = a real key), or null when there is no gap at all. */
  keyMask: Tensor | null;
  /** Stores the forward's last hidden states h [B, N, H] of the fresh positions into the pool. */
  storeHidden(h: Tensor): void;
}

export function prefillCache(pool: BlockPool, config: ModelConfig, rows: PrefillRow[], N: number): PagedPrefill {
  const nKV = config.numKvHeads;
  const D = config.headDim;
  const B = rows.length;
  const C = Math.max(...rows.map((r) => r.cached));
  const device = pool.keys[0]!.device;
  const int64 = { dtype: 'int64' as const, device };
  // Fresh positions: source rows of k [B, nKV, N, D] viewed [B·nKV·N, D], and their rows in the pool.
  const src: number[] = [];
  const dst: number[] = [];
  const hiddenSrc: number[] = [];
  const hiddenDst: number[] = [];
  rows.forEach((r, b) => {
    for (let i = 0; i < r.fresh; i++) {
      const j = N - r.fresh + i;
      const p = r.cached + i;
      for (let h = 0; h < nKV; h++) {
        src.push((b * nKV + h) * N + j);
        dst.push(keyRow(r.blocks, p, h, nKV));
      }
      hiddenSrc.push(b * N + j);
      hiddenDst.push(slotOf(r.blocks, p));
    }
  });
  const srcIdx = tensor(src, int64);
  const dstIdx = tensor(dst, int64);
  // Cached positions, right-aligned before the fresh ones; a gap reads the row's position 0 (real data,
  // masked out: never uninitialised memory).
  let gatherIdx: Tensor | null = null;
  if (C > 0) {
    const rowsIdx: number[] = [];
    rows.forEach((r) => {
      for (let h = 0; h < nKV; h++)
        for (let c = 0; c < C; c++) {
          const p = c - (C - r.cached);
          rowsIdx.push(keyRow(r.blocks, p >= 0 ? p : 0, h, nKV));
        }
    });
    gatherIdx = tensor(rowsIdx, int64); // [B·nKV·C]
  }
  const gapless = C === 0 && rows.every((r) => r.fresh === N);
  const keyMask = gapless
    ? null
    : tensor(
        rows.map((r) =>
          Array.from({ length: C + N }, (_, j) => ((j >= C - r.cached && j < C) || j >= C + N - r.fresh ? 1 : 0)),
        ),
        int64,
      ); // [B, C + N]
  const write = (layerPool: Tensor, fresh: Tensor): Tensor => {
    const flat = fresh.contiguous().view(-1, D); // [B·nKV·N, D]
    layerPool.view(-1, D).indexCopy_(0, dstIdx, flat.indexSelect(0, srcIdx));
    if (gatherIdx === null) return fresh;
    const past = layerPool.view(-1, D).indexSelect(0, gatherIdx).view(B, nKV, C, D); // [B, nKV, C, D]
    return cat([past, fresh], 2); // [B, nKV, C + N, D]
  };
  const hiddenSrcIdx = tensor(hiddenSrc, int64);
  const hiddenDstIdx = tensor(hiddenDst, int64);
  return {
    cache: {
      length: C,
      update: (layer, k, v) => [write(pool.keys[layer]!, k), write(pool.values[layer]!, v)],
      advance: () => {},
    },
    keyMask,
    storeHidden: (h) => {
      pool.hidden!.indexCopy_(0, hiddenDstIdx, h.reshape(-1, h.size(2)).indexSelect(0, hiddenSrcIdx));
    },
  };
}

export interface DecodeRow {
  blocks: number[];
  /** Positions in the blocks before this step (the new token goes to position len). */
  len: number;
}

export interface PagedDecode {
  cache: AttentionCache;
  /** The forward's key mask (the gathering path), or null (the kernel path: positions given). */
  keyMask: Tensor | null;
  /** [B, 1] each row's new position (the kernel path). */
  positions: Tensor | null;
  storeHidden(h: Tensor): void;
}

/** Whether a decode step's attention reads the blocks in place (the native kernel's conditions). */
export function kernelApplies(pool: BlockPool, config: ModelConfig): boolean {
  const k = pool.keys[0];
  return (
    k !== undefined &&
    k.dtype === 'float32' &&
    k.device === 'cpu' &&
    config.attnLogitSoftcap === null &&
    blasInfo().smallGemm !== 'off'
  );
}

export function decodeCache(pool: BlockPool, config: ModelConfig, rows: DecodeRow[]): PagedDecode {
  const nKV = config.numKvHeads;
  const D = config.headDim;
  const B = rows.length;
  const device = pool.keys[0]!.device;
  const int64 = { dtype: 'int64' as const, device };
  const dstIdx = tensor(
    rows.flatMap((r) => Array.from({ length: nKV }, (_, h) => keyRow(r.blocks, r.len, h, nKV))),
    int64,
  ); // [B·nKV]: the new token's rows in the pool
  const hiddenIdx = tensor(
    rows.map((r) => slotOf(r.blocks, r.len)),
    int64,
  ); // [B]
  const store = (layerPool: Tensor, fresh: Tensor) =>
    layerPool.view(-1, D).indexCopy_(0, dstIdx, fresh.contiguous().view(-1, D)); // fresh [B, nKV, 1, D]
  const storeHidden = (h: Tensor) => {
    pool.hidden!.indexCopy_(0, hiddenIdx, h.reshape(-1, h.size(2)));
  };
  if (kernelApplies(pool, config)) {
    const M = Math.max(...rows.map((r) => Math.floor(r.len / BLOCK_SIZE) + 1));
    const tables = tensor(
      rows.map((r) => Array.from({ length: M }, (_, i) => r.blocks[i] ?? 0)),
      int64,
    ); // [B, M]
    const lens = tensor(
      rows.map((r) => r.len + 1),
      int64,
    ); // [B]
    const positions = tensor(
      rows.map((r) => [r.len]),
      int64,
    ); // [B, 1]
    return {
      cache: {
        length: 0,
        update: (layer, k, v) => {
          store(pool.keys[layer]!, k);
          store(pool.values[layer]!, v);
          return [k, v];
        },
        attend: (layer, q, o) =>
          pagedAttention(q.contiguous(), pool.keys[layer]!, pool.values[layer]!, tables, lens, o), // [B, nH, 1, D]
        advance: () => {},
      },
      keyMask: null,
      positions,
      storeHidden,
    };
  }
  // Gathering: each row's len + 1 keys right-aligned in [B, nKV, S + 1, D]; the gap reads position 0.
  const S = Math.max(...rows.map((r) => r.len));
  const gather: number[] = [];
  rows.forEach((r) => {
    for (let h = 0; h < nKV; h++)
      for (let j = 0; j <= S; j++) {
        const p = j - (S - r.len);
        gather.push(keyRow(r.blocks, p >= 0 ? p : 0, h, nKV));
      }
  });
  const gatherIdx = tensor(gather, int64); // [B·nKV·(S+1)]
  const keyMask = tensor(
    rows.map((r) => Array.from({ length: S + 1 }, (_, j) => (j < S - r.len ? 0 : 1))),
    int64,
  ); // [B, S + 1]
  const read = (layerPool: Tensor) =>
    layerPool
      .view(-1, D)
      .indexSelect(0, gatherIdx)
      .view(B, nKV, S + 1, D);
  return {
    cache: {
      length: S,
      update: (layer, k, v) => {
        store(pool.keys[layer]!, k);
        store(pool.values[layer]!, v);
        return [read(pool.keys[layer]!), read(pool.values[layer]!)];
      },
      advance: () => {},
    },
    keyMask,
    positions: null,
    storeHidden,
  };
}

/** The flat rows of `pool.hidden` of positions 0 .. count - 1 of a sequence in `blocks`. */
export function hiddenRows(blocks: number[], count: number): number[] {
  return Array.from({ length: count }, (_, p) => slotOf(blocks, p));
}
