// The decoding engine's core: continuous batching over a paged KV cache, one synchronous iteration at a time.
// Each iteration (runOnce) runs a prefill forward (new sequences, and the next chunk of long prompts) and a
// decode step over every running sequence; between them it drops finished and cancelled rows. Every
// sequence's keys and values live in blocks of a shared pool (block-pool.ts) listed by its block table;
// full blocks are found again by the hash of the adapter and the tokens up to their end (block-hash.ts), so
// a prefix already computed (a system prompt, the context of several multiple-choice continuations) is not
// computed again. Rows of different adapters share each forward through one AdapterBatch, as the trainer's
// fused batches do; each row has its own sampler (sampling.ts).
//
// Two drivers: the server's Engine (engine.ts) runs iterations in an async loop as requests arrive, and
// generate() (generate/generate.ts) runs them for a fixed set of prompts. One decode loop, one sampler.
//
// Memory never runs out: a new sequence waits until the pool has blocks for its prompt; a running one
// that needs a block when none is left takes the blocks of the sequence admitted last, which goes back to
// the front of the queue and is computed again from its tokens when blocks free up (vLLM's preemption by
// recomputation; its cached blocks usually make that cheap). The pool always holds the longest sequence.
import { noGrad } from '../tensor/autograd.js';
import { tensor } from '../tensor/create.js';
import { tidy } from '../tensor/scope.js';
import type { Tensor } from '../tensor/tensor.js';
import type { CausalLM } from '../models/causal-lm.js';
import type { Adapter } from '../adapters/adapter.js';
import { AdapterBatch, type RowRange } from '../adapters/batch.js';
import { AdapterStackCache } from '../adapters/adapter-stack.js';
import { BLOCK_SIZE, BlockPool, blocksFor } from './block-pool.js';
import { extendBlockHashes } from './block-hash.js';
import { decodeCache, hiddenRows, prefillCache, type PrefillRow } from './paged-cache.js';
import { RowSampler, type SamplingParams, type TokenChoice, type TokenConstraint } from './sampling.js';
import { scorePrompts, type PromptScore } from './prompt-scores.js';
import { ApiError, badRequest } from './errors.js';
import type { ServerMetrics } from './metrics.js';
import { DEFAULT_PREFILL_CHUNK } from './limits.js';

/** Padded prompt positions (rows × longest fresh part) one prefill forward runs at most. */
const PREFILL_TOKENS = 2048;

export type FinishReason = 'stop' | 'length' | 'abort';

/** Where a sequence's tokens go. */
export interface SequenceSink {
  /** The prompt's own log-probabilities (when SequenceSpec.promptLogprobs asked for them), before any token. */
  onPrompt?(scores: PromptScore[]): void;
  /** A new token; returns true when the sequence should end here (a stop string matched). */
  onToken(choice: TokenChoice): boolean;
  /** Called once; `error` when the engine failed on this sequence. */
  onFinish(reason: FinishReason, error?: Error): void;
}

export interface SequenceSpec {
  prompt: number[];
  /** 0: the prompt is only scored (with promptLogprobs), nothing is generated. */
  maxTokens: number;
  /** Report the prompt tokens' log-probabilities with this many alternatives each; null: none. */
  promptLogprobs?: number | null;
  /** Structured output: the tokens allowed at each step (the engine owns it once submit returns). */
  constraint?: TokenConstraint | null;
  /** The served name (metrics label) and its adapter (null: the base model). */
  modelName: string;
  adapter: Adapter | null;
  sampling: SamplingParams;
  sink: SequenceSink;
}

export interface EngineOptions {
  maxBatch: number;
  maxQueue: number;
  stopIds: number[];
  metrics: ServerMetrics;
  /** KV blocks in the pool (of BLOCK_SIZE positions); default: --max-batch full contexts. */
  kvBlocks?: number;
  /** The most positions (prompt and new tokens) one sequence will have; the pool must hold one such
   * sequence. Default: the model's context. */
  maxPositions?: number;
  /** Automatic prefix caching (default on). */
  prefixCache?: boolean;
  /** Prompts longer than this are prefilled in chunks of this many tokens between decode steps. */
  prefillChunk?: number;
}

type RowState = 'waiting' | 'prefilling' | 'running';

interface Row {
  spec: SequenceSpec;
  sampler: RowSampler;
  /** The prompt and the tokens generated so far: what a prefill computes (again, after a preemption). */
  tokens: number[];
  /** Block table: the blocks holding positions 0.., in order. */
  blocks: number[];
  /** Prefix-cache hashes of the full blocks of `tokens`. */
  hashes: string[];
  /** Blocks registered in the prefix cache (the first `registered` of `blocks`). */
  registered: number;
  /** Positions whose keys and values are in the blocks. */
  len: number;
  /** The latest token, not yet in the cache (the next decode step's input). */
  last: number;
  generated: number;
  arrived: number;
  lastTokenAt: number;
  state: RowState;
  /** Admission order: a row that needs a block when none is left takes those of the latest admitted. */
  admitted: number;
  /** The prompt's log-probabilities were sent (a recomputed row does not send them again). */
  scored: boolean;
  cancelled: boolean;
  done: boolean;
}

export interface SequenceHandle {
  cancel(): void;
}

export class EngineCore {
  protected waiting: Row[] = [];
  protected prefilling: Row[] = [];
  protected running: Row[] = [];
  readonly pool: BlockPool;
  protected readonly prefixCache: boolean;
  private readonly prefillChunk: number;
  /** Steps that mix adapters run their modules stacked (adapter-stack.ts); kept while busy. */
  protected readonly stacks = new AdapterStackCache();
  /** Each adapter object's identity in block hashes (a reloaded adapter is another object). */
  private readonly identities = new WeakMap<Adapter, string>();
  private nextIdentity = 1;
  private admissions = 0;
  /** False once shutting down: submit() answers 503. */
  protected accepting = true;
  /** The most rows one decode step has run (tests use it to see that requests shared steps). */
  peakBatch = 0;
  /** The most sequences one prefill forward has run. */
  peakPrefill = 0;
  /** Rows taken out of the batch for their blocks (and computed again later). */
  preemptions = 0;
  /** Prefill forwards and decode steps run so far (an iteration that adds none made no progress). */
  forwards = 0;

  constructor(
    readonly model: CausalLM,
    readonly opts: EngineOptions,
  ) {
    const longest = (opts.maxPositions ?? model.config.maxPositionEmbeddings) + 1;
    const blocks = opts.kvBlocks ?? opts.maxBatch * blocksFor(longest);
    if (blocks < blocksFor(longest))
      throw new RangeError(
        `the KV cache needs room for one full context (${longest - 1} positions: ${blocksFor(longest)} blocks of ${BLOCK_SIZE}); ${blocks} given`,
      );
    this.pool = new BlockPool(model.config, blocks, model.dtype, model.device);
    this.prefixCache = opts.prefixCache ?? true;
    this.prefillChunk = Math.max(1, opts.prefillChunk ?? DEFAULT_PREFILL_CHUNK);
  }

  /** Called when there is new work (a submission, a cancellation): the server's loop wakes up. */
  protected notify(): void {}

  get queueDepth(): number {
    return this.waiting.length;
  }
  get batchSize(): number {
    return this.running.length;
  }
  get idle(): boolean {
    return this.waiting.length === 0 && this.running.length === 0 && this.prefilling.length === 0;
  }

  /** Queues sequences (all or none); throws 429 when the queue is full, 503 when shutting down. */
  submit(specs: SequenceSpec[]): SequenceHandle[] {
    if (!this.accepting) throw new ApiError(503, 'the server is shutting down', 'server_error', null, 'shutting_down');
    if (specs.length > this.opts.maxBatch + this.opts.maxQueue)
      throw badRequest(
        `the request needs ${specs.length} sequences (prompts × n); this server runs and queues ${this.opts.maxBatch + this.opts.maxQueue} at most`,
        'n',
      );
    const free = this.opts.maxBatch - this.running.length - this.prefilling.length;
    if (this.waiting.length + specs.length > this.opts.maxQueue + Math.max(0, free)) {
      throw new ApiError(
        429,
        `the queue is full (${this.opts.maxQueue} sequences waiting at most); retry later`,
        'rate_limit_error',
        null,
        'queue_full',
        { 'retry-after': '1' },
      );
    }
    const now = performance.now();
    const rows = specs.map((spec): Row => {
      const row: Row = {
        spec,
        sampler: new RowSampler(spec.sampling, {
          eosIds: this.opts.stopIds,
          constraint: spec.constraint ?? null,
          prompt: spec.prompt,
        }),
        tokens: [...spec.prompt],
        blocks: [],
        hashes: [],
        registered: 0,
        len: 0,
        last: -1,
        generated: 0,
        arrived: now,
        lastTokenAt: now,
        state: 'waiting',
        admitted: 0,
        scored: spec.promptLogprobs == null,
        cancelled: false,
        done: false,
      };
      if (this.prefixCache) extendBlockHashes(this.identity(spec.adapter), row.tokens, row.hashes);
      this.waiting.push(row);
      return row;
    });
    this.gauges();
    this.notify();
    return rows.map((row) => ({
      cancel: () => {
        if (row.done) return;
        row.cancelled = true;
        this.notify();
      },
    }));
  }

  /** One iteration: a prefill forward when sequences wait or are part-way through their prompt, then a
   * decode step over the running ones. A failure here fails the rows it touched, not the caller. */
  runOnce(): void {
    try {
      this.sweep();
      const batch = this.schedulePrefill();
      if (batch.length > 0) {
        this.forwards += 1;
        this.prefill(batch);
      }
      this.sweep();
      if (this.running.length > 0) {
        this.forwards += 1;
        this.step();
      }
      this.sweep();
      this.gauges();
      // Nothing left to run: the stacked copies of adapters go now (memory back where it was, an
      // unloaded adapter's copies with it), before the last responses reach their clients.
      if (this.idle) this.stacks.clear();
    } catch (e) {
      // A bug here must not stop the server: the rows it touched fail, the engine goes on.
      for (const row of [...this.prefilling, ...this.running]) this.fail(row, e);
      this.prefilling = [];
      this.running = [];
    }
  }

  /** Ends every sequence still here (finish_reason 'abort') and frees the pool and the stacked adapters. */
  close(): void {
    this.accepting = false;
    for (const row of [...this.waiting.splice(0), ...this.prefilling, ...this.running]) this.finish(row, 'abort');
    this.prefilling = [];
    this.running = [];
    this.stacks.clear();
    this.pool.dispose();
  }

  private identity(adapter: Adapter | null): string {
    if (adapter === null) return 'base';
    let id = this.identities.get(adapter);
    if (!id) {
      id = `adapter-${this.nextIdentity++}`;
      this.identities.set(adapter, id);
    }
    return id;
  }

  /** Drops cancelled rows (a client went away) and finished ones. */
  protected sweep(): void {
    this.waiting = this.waiting.filter((row) => {
      if (row.cancelled) this.finish(row, 'abort');
      return !row.done;
    });
    for (const row of [...this.prefilling, ...this.running]) if (row.cancelled && !row.done) this.finish(row, 'abort');
    this.prefilling = this.prefilling.filter((row) => !row.done);
    this.running = this.running.filter((row) => !row.done);
  }

  /** The rows of the next prefill forward and how many tokens each computes: the next chunk of the
   * prompts being prefilled, then waiting rows while the batch has room, the pool has blocks (a new row
   * never takes blocks from admitted ones) and the forward stays within PREFILL_TOKENS padded positions.
   * A waiting row first takes the cached blocks of its prefix. One whose next block another row of this
   * batch is computing waits for the next forward, where it finds that block cached (the continuations of
   * one multiple-choice context, sent together, compute the context once). */
  private schedulePrefill(): { row: Row; fresh: number }[] {
    const batch: { row: Row; fresh: number }[] = [];
    const fits = (fresh: number) =>
      batch.length === 0 || Math.max(fresh, ...batch.map((b) => b.fresh)) * (batch.length + 1) <= PREFILL_TOKENS;
    for (const row of [...this.prefilling]) {
      if (row.state !== 'prefilling') continue; // stepped back for a row admitted before it
      const fresh = Math.min(this.prefillChunk, row.tokens.length - row.len);
      if (!fits(fresh)) break;
      if (this.reserveBlocks(row, row.len + fresh, true)) batch.push({ row, fresh });
    }
    const computing = new Set<string>();
    for (const { row, fresh } of batch) for (const h of this.hashesComputed(row, fresh)) computing.add(h);
    const deferred: Row[] = [];
    while (this.waiting.length > 0 && this.running.length + this.prefilling.length < this.opts.maxBatch) {
      const row = this.waiting[0]!;
      if (this.prefixCache) {
        this.takeCachedPrefix(row);
        if (computing.has(row.hashes[row.len / BLOCK_SIZE] ?? '')) {
          // Its next block is being computed by a row of this batch: found cached next time.
          this.dropBlocks(row);
          deferred.push(this.waiting.shift()!);
          continue;
        }
      }
      const fresh = Math.min(this.prefillChunk, row.tokens.length - row.len);
      if (!fits(fresh) || !this.reserveBlocks(row, row.len + fresh, false)) {
        this.dropBlocks(row); // its cached prefix is looked up again when it is admitted
        break;
      }
      this.waiting.shift();
      const m = this.opts.metrics;
      if (this.prefixCache) {
        m.prefixQueryTokens.inc(row.tokens.length);
        m.prefixHitTokens.inc(row.len);
      }
      batch.push({ row, fresh });
      row.state = 'prefilling';
      row.admitted = ++this.admissions;
      this.prefilling.push(row);
      for (const h of this.hashesComputed(row, fresh)) computing.add(h);
    }
    this.waiting.unshift(...deferred);
    return batch;
  }

  /** Hashes of the full blocks a prefill of `fresh` tokens of `row` completes. */
  private hashesComputed(row: Row, fresh: number): string[] {
    return row.hashes.slice(Math.floor(row.len / BLOCK_SIZE), Math.floor((row.len + fresh) / BLOCK_SIZE));
  }

  /** Takes the cached blocks of a waiting row's longest cached prefix, leaving at least its last token
   * to compute (its logits choose the next token). */
  private takeCachedPrefix(row: Row): void {
    for (let k = row.blocks.length; (k + 1) * BLOCK_SIZE <= row.tokens.length - 1 && k < row.hashes.length; k++) {
      const block = this.pool.lookup(row.hashes[k]!);
      if (block === null) break;
      row.blocks.push(block);
      row.len += BLOCK_SIZE;
      row.registered += 1;
    }
  }

  /** Makes `row`'s blocks cover `positions` positions. A row already admitted (`mayTake`) takes, when the
   * pool is short, the blocks of rows admitted after it, the latest first; with none left it steps back
   * itself. A waiting row never takes blocks. False when the blocks could not be had. */
  private reserveBlocks(row: Row, positions: number, mayTake: boolean): boolean {
    const need = blocksFor(positions) - row.blocks.length;
    if (need <= 0) return true;
    while (this.pool.available < need) {
      if (!mayTake) return false;
      const later = [...this.prefilling, ...this.running]
        .filter((r) => r !== row && !r.done && r.admitted > row.admitted)
        .sort((a, b) => b.admitted - a.admitted)[0];
      if (!later) {
        this.preempt(row);
        return false;
      }
      this.preempt(later);
    }
    this.pool.ensureAllocated();
    for (let i = 0; i < need; i++) row.blocks.push(this.pool.allocate()!);
    return true;
  }

  /** Takes a row out of the batch and gives its blocks back; it waits at the front of the queue and is
   * computed again from its tokens (its registered blocks stay cached: usually found again). */
  private preempt(row: Row): void {
    this.preemptions += 1;
    this.opts.metrics.preemptions.inc();
    this.dropBlocks(row);
    this.prefilling = this.prefilling.filter((r) => r !== row);
    this.running = this.running.filter((r) => r !== row);
    row.state = 'waiting';
    // Running, its last token is not in the cache: it is the last of the tokens computed again.
    this.waiting.unshift(row);
  }

  private dropBlocks(row: Row): void {
    for (const block of row.blocks) this.pool.release(block);
    row.blocks = [];
    row.len = 0;
    row.registered = 0;
  }

  /** Registers the row's full blocks in the prefix cache. */
  private register(row: Row): void {
    if (!this.prefixCache) return;
    extendBlockHashes(this.identity(row.spec.adapter), row.tokens, row.hashes);
    const full = Math.floor(row.len / BLOCK_SIZE);
    for (; row.registered < full; row.registered++)
      this.pool.register(row.blocks[row.registered]!, row.hashes[row.registered]!);
  }

  /** One forward over the next tokens of `batch`'s rows (blocks reserved). Rows whose prompt is complete
   * get their first token (and their prompt's log-probabilities when asked for) and join the decode steps;
   * the others (a long prompt's chunk) wait for their next chunk. */
  private prefill(batch: { row: Row; fresh: number }[]): void {
    const { ordered, ranges } = byAdapter(batch.map((b) => b.row));
    const freshOf = new Map(batch.map((b) => [b.row, b.fresh]));
    const hooks = ranges.every((range) => range.adapter === null)
      ? undefined
      : new AdapterBatch(ranges, { training: false, record: 'none' });
    const N = Math.max(...ordered.map((row) => freshOf.get(row)!));
    const completes = ordered.map((row) => row.len + freshOf.get(row)! === row.tokens.length);
    let chosen: (TokenChoice | Error | null)[];
    let scores: Map<Row, PromptScore[]>;
    try {
      ({ chosen, scores } = this.forwardPrefill(ordered, freshOf, N, completes, hooks));
    } catch (e) {
      // One sequence's fault must not fail the others that arrived with it: alone, each gets its own answer.
      if (ordered.length === 1) this.fail(ordered[0]!, e);
      else for (const row of ordered) if (!row.done) this.prefill([{ row, fresh: freshOf.get(row)! }]);
      return;
    }
    this.peakPrefill = Math.max(this.peakPrefill, ordered.length);
    ordered.forEach((row, i) => {
      if (row.done) return;
      const fresh = freshOf.get(row)!;
      if (row.generated === 0) this.opts.metrics.promptTokens.inc({ model: row.spec.modelName }, fresh);
      row.len += fresh;
      this.register(row);
      if (!completes[i]) return;
      const s = scores.get(row);
      if (s) {
        row.scored = true;
        // Kept with the prompt's registered blocks, for the next request on this prefix.
        const top = row.spec.promptLogprobs!;
        for (let j = 1; j < Math.min(s.length, row.registered * BLOCK_SIZE); j++)
          this.pool.keepScore(row.blocks[Math.floor(j / BLOCK_SIZE)]!, j % BLOCK_SIZE, s[j]!, top);
        try {
          row.spec.sink.onPrompt?.(s);
        } catch (e) {
          this.fail(row, e);
          return;
        }
      }
      this.prefilling = this.prefilling.filter((r) => r !== row);
      // Scoring only (max_tokens 0): the prompt was the work.
      if (row.spec.maxTokens === 0) return this.finish(row, 'length');
      const choice = chosen[i]!;
      if (choice instanceof Error) return this.fail(row, choice);
      row.state = 'running';
      this.running.push(row);
      this.accept(row, choice);
    });
  }

  /** The prefill forward (under its own scope): the next token of each completing row, the prompt scores
   * asked for; the hooks are disposed after. */
  private forwardPrefill(
    ordered: Row[],
    freshOf: Map<Row, number>,
    N: number,
    completes: boolean[],
    hooks: AdapterBatch | undefined,
  ): { chosen: (TokenChoice | Error | null)[]; scores: Map<Row, PromptScore[]> } {
    try {
      return noGrad(() =>
        tidy(() => {
          const device = this.model.device;
          const rows: PrefillRow[] = ordered.map((row) => ({
            blocks: row.blocks,
            cached: row.len,
            fresh: freshOf.get(row)!,
          }));
          const ids = tensor(
            ordered.map((row) => {
              const fresh = freshOf.get(row)!;
              return [...new Array<number>(N - fresh).fill(0), ...row.tokens.slice(row.len, row.len + fresh)];
            }),
            { dtype: 'int64', device },
          ); // [B, N], left-padded
          const paged = prefillCache(this.pool, this.model.config, rows, N);
          const h = this.model.lastHidden(ids, { attentionMask: paged.keyMask, cache: paged.cache, hooks }); // [B, N, H]
          paged.storeHidden(h);
          // Prompt scores: the stored hidden states of every position (cached ones included), or the scores
          // kept with cached blocks.
          const scores = new Map<Row, PromptScore[]>();
          const toScore = ordered.filter((row, i) => completes[i] && !row.scored && row.spec.promptLogprobs != null);
          if (toScore.length > 0) {
            const scored = scorePrompts(
              this.model,
              this.pool.hidden!,
              toScore.map((row) => ({
                rows: hiddenRows(row.blocks, row.spec.prompt.length - 1),
                ids: row.spec.prompt,
                top: row.spec.promptLogprobs!,
                known: row.spec.prompt.map((_, j) =>
                  this.pool.scoreOf(row.blocks[Math.floor(j / BLOCK_SIZE)]!, j % BLOCK_SIZE, row.spec.promptLogprobs!),
                ),
              })),
            );
            toScore.forEach((row, i) => scores.set(row, scored[i]!));
          }
          const picked = ordered.flatMap((_, i) => (completes[i] ? [i] : []));
          const chosen: (TokenChoice | Error | null)[] = ordered.map(() => null);
          if (picked.length > 0) {
            const at = tensor(picked, { dtype: 'int64', device }); // [b]
            const logits = this.model.head(h.narrow(1, N - 1, 1).indexSelect(0, at)).select(1, 0); // [b, V]
            const tokens = this.chooseTokens(
              logits,
              picked.map((i) => ordered[i]!),
            );
            picked.forEach((i, j) => (chosen[i] = tokens[j]!));
          }
          return { chosen, scores };
        }),
      );
    } finally {
      hooks?.dispose();
    }
  }

  /** One decode step over every running row, rows grouped by adapter. */
  private step(): void {
    // The block for each row's new position (taken from later-admitted rows when the pool is full).
    for (const row of [...this.running].sort((a, b) => a.admitted - b.admitted))
      if (this.running.includes(row)) this.reserveBlocks(row, row.len + 1, true);
    const rows = this.running.filter((row) => !row.done);
    if (rows.length === 0) return;
    this.peakBatch = Math.max(this.peakBatch, rows.length);
    const { ordered, ranges } = byAdapter(rows);
    // Base-model-only steps run the plain hooks, exactly as `generate` without an adapter.
    const hooks = ranges.every((range) => range.adapter === null)
      ? undefined
      : new AdapterBatch(ranges, { training: false, record: 'none', stacks: this.stacks });
    let chosen: (TokenChoice | Error)[];
    try {
      chosen = noGrad(() =>
        tidy(() => {
          const paged = decodeCache(this.pool, this.model.config, ordered);
          const ids = tensor(
            ordered.map((row) => [row.last]),
            { dtype: 'int64', device: this.model.device },
          ); // [B, 1]
          const h = this.model.lastHidden(ids, {
            attentionMask: paged.keyMask,
            positions: paged.positions,
            cache: paged.cache,
            hooks,
          }); // [B, 1, H]
          paged.storeHidden(h);
          return this.chooseTokens(this.model.head(h).select(1, 0), ordered); // logits [B, V]
        }),
      );
    } catch (e) {
      for (const row of ordered) this.fail(row, e);
      return;
    } finally {
      hooks?.dispose();
    }
    ordered.forEach((row, i) => {
      row.len += 1;
      this.register(row);
      const choice = chosen[i]!;
      if (choice instanceof Error) this.fail(row, choice);
      else this.accept(row, choice);
    });
  }

  /** Each row's token from logits [B, V]: argmax on the device; the rows that sample, report
   * log-probabilities or process their logits get theirs on the host (one copy for the batch). A row
   * whose choice throws (its structured-output constraint) gets the error, to fail alone. */
  private chooseTokens(logits: Tensor, rows: Row[]): (TokenChoice | Error)[] {
    const greedy = logits.argmax(-1).toNumbers(); // [B]
    const needs = rows.map((row) => row.spec.maxTokens > 0 && row.sampler.needsLogits);
    const host = needs.some((x) => x) ? logits.contiguous().toFloat32Array() : null; // [B · V]
    const V = logits.size(1);
    return rows.map((row, i) => {
      if (row.spec.maxTokens === 0) return { id: greedy[i]! }; // scoring only: nothing is chosen
      try {
        return row.sampler.pick(greedy[i]!, needs[i] ? host!.subarray(i * V, (i + 1) * V) : null);
      } catch (e) {
        return e instanceof Error ? e : new Error(String(e));
      }
    });
  }

  /** Hands a new token to its sink and decides whether the row goes on. */
  private accept(row: Row, choice: TokenChoice): void {
    const now = performance.now();
    const m = this.opts.metrics;
    const label = { model: row.spec.modelName };
    if (row.generated === 0) m.timeToFirstToken.observe(label, (now - row.arrived) / 1000);
    else m.timePerToken.observe(label, (now - row.lastTokenAt) / 1000);
    m.generatedTokens.inc(label);
    row.lastTokenAt = now;
    row.generated += 1;
    row.last = choice.id;
    row.tokens.push(choice.id);
    let stop = false;
    try {
      stop = row.spec.sink.onToken(choice);
    } catch (e) {
      this.fail(row, e);
      return;
    }
    const p = row.spec.sampling;
    const ends = (!p.ignoreEos && this.opts.stopIds.includes(choice.id)) || (p.stopTokenIds ?? []).includes(choice.id);
    let complete = false;
    try {
      // A complete structured output ends its row whatever ignore_eos says (its grammar takes no more tokens).
      complete = row.sampler.finished;
    } catch (e) {
      this.fail(row, e);
      return;
    }
    if (stop || ends || complete) this.finish(row, 'stop');
    else if (row.generated >= row.spec.maxTokens) this.finish(row, 'length');
  }

  private finish(row: Row, reason: FinishReason, error?: Error): void {
    if (row.done) return;
    row.done = true;
    row.sampler.dispose();
    this.dropBlocks(row);
    try {
      row.spec.sink.onFinish(reason, error);
    } catch {
      // A sink that throws while finishing has nothing left to tell its client.
    }
  }

  private fail(row: Row, e: unknown): void {
    this.finish(row, 'abort', e instanceof Error ? e : new Error(String(e)));
  }

  private gauges(): void {
    const m = this.opts.metrics;
    m.queueDepth.set(this.waiting.length);
    m.runningBatch.set(this.running.filter((row) => !row.done).length);
    m.kvBlocks.set({ state: 'used' }, this.pool.used);
    m.kvBlocks.set({ state: 'cached' }, this.pool.cachedIdle);
    m.kvBlocks.set({ state: 'free' }, this.pool.available - this.pool.cachedIdle);
  }
}

/** Rows grouped by adapter (each group contiguous, in order of first appearance) and the groups' ranges. */
function byAdapter<R extends { spec: { adapter: Adapter | null } }>(rows: R[]): { ordered: R[]; ranges: RowRange[] } {
  const groups = new Map<Adapter | null, R[]>();
  for (const row of rows) {
    const group = groups.get(row.spec.adapter);
    if (group) group.push(row);
    else groups.set(row.spec.adapter, [row]);
  }
  const ordered: R[] = [];
  const ranges: RowRange[] = [];
  for (const [adapter, group] of groups) {
    ranges.push({ start: ordered.length, count: group.length, adapter });
    ordered.push(...group);
  }
  return { ordered, ranges };
}
