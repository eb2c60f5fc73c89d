// The paged KV cache's memory: a pool of fixed-size blocks shared by every sequence (as vLLM's paged
// attention), each block holding BLOCK_SIZE consecutive positions of one sequence in every layer, and the
// final hidden states of those positions (so that a prompt served from cached blocks still gets its
// log-probabilities: the LM head runs on the stored states). Per layer, keys and values are
// [N, kvHeads, BLOCK_SIZE, headDim]: one block's keys of one head are BLOCK_SIZE contiguous rows, the layout
// the decode kernel reads in place (native/kernels/decode_attention.cc).
//
// Prefix caching: a full block can be registered under the hash of everything its contents depend on (the
// adapter's identity and all tokens up to its end, block-hash.ts); a later sequence with the same prefix
// takes it instead of computing it. Blocks no sequence uses stay cached until their memory is needed, the
// least recently used first.
import fs from 'node:fs';
import os from 'node:os';
import { empty } from '../tensor/create.js';
import type { DType } from '../tensor/dtype.js';
import { ITEM_SIZE } from '../tensor/dtype.js';
import type { Device, Tensor } from '../tensor/tensor.js';
import type { ModelConfig } from '../models/config.js';
import { DEFAULT_KV_SHARE } from './limits.js';
import type { PromptScore } from './prompt-scores.js';

/** Positions per block (vLLM's default). */
export const BLOCK_SIZE = 16;

/** Bytes one block takes: keys and values in every layer, and the hidden states. */
export function blockBytes(c: ModelConfig, dtype: DType): number {
  return (2 * c.numLayers * c.numKvHeads * c.headDim + c.hiddenSize) * BLOCK_SIZE * ITEM_SIZE[dtype];
}

/** Blocks that hold `positions` positions. */
export const blocksFor = (positions: number): number => Math.ceil(positions / BLOCK_SIZE);

export class BlockPool {
  /** Per layer [N, kvHeads, BLOCK_SIZE, headDim]; allocated on first use, freed by release(). */
  keys: Tensor[] = [];
  values: Tensor[] = [];
  /** [N · BLOCK_SIZE, hidden]: the last decoder layer's output at each position. */
  hidden: Tensor | null = null;
  private readonly refs: Int32Array;
  /** Free blocks, the lowest id last (taken first: the memory in use stays compact). */
  private free: number[];
  /** Cached blocks no sequence uses, least recently used first (a Map keeps insertion order). */
  private readonly idle = new Map<number, true>();
  private readonly byHash = new Map<string, number>();
  private readonly hashOf: (string | null)[];
  /** Registered blocks' prompt scores: each position's token log-probability and top alternatives, fixed by
   * the block's hash like its keys and values (echo requests on a cached prefix skip the LM head there). */
  private readonly scores = new Map<number, { top: number; positions: (PromptScore | null)[] }>();

  constructor(
    private readonly config: ModelConfig,
    readonly numBlocks: number,
    private readonly dtype: DType,
    private readonly device: Device,
  ) {
    this.refs = new Int32Array(numBlocks);
    this.hashOf = new Array<string | null>(numBlocks).fill(null);
    this.free = Array.from({ length: numBlocks }, (_, i) => numBlocks - 1 - i);
  }

  /** Blocks a new allocation can take: free ones and cached ones no sequence uses. */
  get available(): number {
    return this.free.length + this.idle.size;
  }
  /** Blocks some sequence holds. */
  get used(): number {
    return this.numBlocks - this.free.length - this.idle.size;
  }
  /** Cached blocks no sequence holds (kept for prefix hits until their memory is needed). */
  get cachedIdle(): number {
    return this.idle.size;
  }
  /** Whether the tensors exist. */
  get allocated(): boolean {
    return this.keys.length > 0;
  }

  /** The pool's tensors, made on first use. They are made uninitialised: every position is written
   * before it is read (the pages of memory are committed as blocks are first used). */
  ensureAllocated(): void {
    if (this.allocated) return;
    const c = this.config;
    const opts = { dtype: this.dtype, device: this.device };
    for (let l = 0; l < c.numLayers; l++) {
      this.keys.push(empty([this.numBlocks, c.numKvHeads, BLOCK_SIZE, c.headDim], opts).keep()); // [N, nKV, bs, D]
      this.values.push(empty([this.numBlocks, c.numKvHeads, BLOCK_SIZE, c.headDim], opts).keep());
    }
    this.hidden = empty([this.numBlocks * BLOCK_SIZE, c.hiddenSize], opts).keep(); // [N · bs, H]
  }

  /** A block for a sequence (its reference count 1): a free one, else the least recently used cached one
   * (forgotten by the cache); null when every block is in use. */
  allocate(): number | null {
    let block = this.free.pop();
    if (block === undefined) {
      const oldest = this.idle.keys().next();
      if (oldest.done) return null;
      block = oldest.value;
      this.idle.delete(block);
      this.forget(block);
    }
    this.refs[block] = 1;
    return block;
  }

  /** The cached block registered under `hash`, taken by one more sequence; null on a miss. */
  lookup(hash: string): number | null {
    const block = this.byHash.get(hash);
    if (block === undefined) return null;
    if (this.refs[block] === 0) this.idle.delete(block);
    this.refs[block]! += 1;
    return block;
  }

  /** Registers a full block's contents under `hash` (a block already registered under it stays the one found). */
  register(block: number, hash: string): void {
    if (this.hashOf[block] !== null || this.byHash.has(hash)) return;
    this.hashOf[block] = hash;
    this.byHash.set(hash, block);
  }

  /** A sequence lets go of a block: with no holder left it is kept for prefix hits when registered, else freed. */
  release(block: number): void {
    const left = (this.refs[block]! -= 1);
    if (left > 0) return;
    if (left < 0) throw new Error(`BlockPool: block ${block} released more often than taken`);
    if (this.hashOf[block] !== null) this.idle.set(block, true);
    else this.free.push(block);
  }

  /** Drops every cached block no sequence holds (prefix caching turned off, or the memory handed back). */
  dropCached(): void {
    for (const block of this.idle.keys()) {
      this.forget(block);
      this.free.push(block);
    }
    this.idle.clear();
    this.free.sort((a, b) => b - a);
  }

  private forget(block: number): void {
    const hash = this.hashOf[block];
    if (hash !== null && hash !== undefined) this.byHash.delete(hash);
    this.hashOf[block] = null;
    this.scores.delete(block);
  }

  /** A registered block's score of position `offset` with at least `top` alternatives, if kept. */
  scoreOf(block: number, offset: number, top: number): PromptScore | null {
    const kept = this.scores.get(block);
    return kept && kept.top >= top ? (kept.positions[offset] ?? null) : null;
  }

  /** Keeps a registered block's position score (with `top` alternatives). */
  keepScore(block: number, offset: number, score: PromptScore, top: number): void {
    if (this.hashOf[block] === null) return;
    let kept = this.scores.get(block);
    if (!kept || kept.top < top) {
      kept = { top, positions: new Array<PromptScore | null>(BLOCK_SIZE).fill(null) };
      this.scores.set(block, kept);
    }
    if (kept.top === top || (score.top?.length ?? 0) >= kept.top) kept.positions[offset] = score;
  }

  /** Frees the tensors when no block is held; the cache is forgotten with them. */
  releaseMemory(): void {
    if (this.used > 0) return;
    this.dropCached();
    for (const t of [...this.keys, ...this.values]) t.dispose();
    this.hidden?.dispose();
    this.keys = [];
    this.values = [];
    this.hidden = null;
  }

  dispose(): void {
    for (const t of [...this.keys, ...this.values]) t.dispose();
    this.hidden?.dispose();
    this.keys = [];
    this.values = [];
    this.hidden = null;
  }
}

/** Bytes of memory available (Linux: MemAvailable of /proc/meminfo; elsewhere os.freemem). */
function availableMemory(): number {
  try {
    const m = /^MemAvailable:\s+(\d+) kB/m.exec(fs.readFileSync('/proc/meminfo', 'utf8'));
    if (m) return Number(m[1]) * 1024;
  } catch {
    // not Linux
  }
  return os.freemem();
}

/** Blocks of the KV pool: `mib` MiB when given; else `wanted` blocks, at most DEFAULT_KV_SHARE of the
 * available memory, never less than `minimum` (the longest sequence's, which the caller refuses when `mib`
 * is too small for it). */
export function kvBlocks(
  c: ModelConfig,
  dtype: DType,
  opts: { mib: number | null; wanted: number; minimum: number },
): { blocks: number; bytes: number; minimum: number } {
  const per = blockBytes(c, dtype);
  const { minimum } = opts;
  const blocks =
    opts.mib !== null
      ? Math.floor((opts.mib * 2 ** 20) / per)
      : Math.max(minimum, Math.min(opts.wanted, Math.floor((availableMemory() * DEFAULT_KV_SHARE) / per)));
  return { blocks, bytes: blocks * per, minimum };
}
