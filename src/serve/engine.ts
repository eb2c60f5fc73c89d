// Continuous batching. One loop runs decode steps over every running sequence; between steps it drops
// finished and cancelled rows and prefills waiting ones, which join at the next step. Each row has its
// own KV cache slot (kv-pool.ts) and its own sampler; rows of different adapters share each step
// through one AdapterBatch, as the trainer's fused batches do.
import { setImmediate as nextTurn } from 'node:timers/promises';
import { noGrad } from '../tensor/autograd.js';
import { tensor } from '../tensor/create.js';
import { tidy } from '../tensor/scope.js';
import type { Tensor } from '../tensor/tensor.js';
import type { CausalLM } from '../models/llama.js';
import type { AttentionCache } from '../models/kvcache.js';
import type { Adapter } from '../adapters/adapter.js';
import { AdapterBatch, type RowRange } from '../adapters/batch.js';
import { AdapterStackCache } from '../adapters/adapter-stack.js';
import { KVPool } from './kv-pool.js';
import { RowSampler, type SamplingParams, type TokenChoice, type TokenConstraint } from './sampling.js';
import { scorePrompts, type PromptScore, type PromptToScore } from './prompt-scores.js';
import { ApiError, badRequest } from './errors.js';
import type { ServerMetrics } from './metrics.js';

/** Padded prompt positions (rows × longest prompt) one batched prefill runs at most. */
const PREFILL_TOKENS = 2048;

/** How long the engine stays idle before it frees its KV caches (the next request allocates them again). */
export const IDLE_RELEASE_MS = 30_000;
/** Event-loop turns admission waits while requests keep arriving (see gather). */
const GATHER_TURNS = 8;

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
  /** Structured output: the tokens allowed at each step (owned by the engine from submit on). */
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
  /** Idle time after which the KV caches are freed (default IDLE_RELEASE_MS). */
  idleReleaseMs?: number;
}

interface Row {
  spec: SequenceSpec;
  sampler: RowSampler;
  slot: number;
  /** Positions in the row's cache. */
  len: number;
  /** The latest token, not yet in the cache (the next step's input). */
  last: number;
  generated: number;
  arrived: number;
  lastTokenAt: number;
  cancelled: boolean;
  done: boolean;
}

export interface SequenceHandle {
  cancel(): void;
}

export class Engine {
  private readonly waiting: Row[] = [];
  private running: Row[] = [];
  private readonly pool: KVPool;
  /** Steps that mix adapters run their modules stacked (adapter-stack.ts); kept while busy. */
  private readonly stacks = new AdapterStackCache();
  private wake: (() => void) | null = null;
  private accepting = true;
  private stopped = false;
  private readonly loopDone: Promise<void>;
  /** The most rows one decode step has run (tests use it to see that requests shared steps). */
  peakBatch = 0;
  /** The most sequences one prefill forward has run. */
  peakPrefill = 0;

  constructor(
    readonly model: CausalLM,
    readonly opts: EngineOptions,
  ) {
    this.pool = new KVPool(model.config, opts.maxBatch, model.dtype, model.device);
    this.loopDone = this.loop();
  }

  get queueDepth(): number {
    return this.waiting.length;
  }
  get batchSize(): number {
    return this.running.length;
  }
  get idle(): boolean {
    return this.waiting.length === 0 && this.running.length === 0;
  }

  /** Queues sequences (all or none); throws 429 when the queue is full, 503 when shutting down. */
  submit(specs: SequenceSpec[]): SequenceHandle[] {
    if (!this.accepting) throw new ApiError(503, 'the server is shutting down', 'server_error', null, 'shutting_down');
    if (specs.length > this.opts.maxBatch + this.opts.maxQueue)
      throw badRequest(
        `the request needs ${specs.length} sequences (prompts × n); this server runs and queues ${this.opts.maxBatch + this.opts.maxQueue} at most`,
        'n',
      );
    const free = this.opts.maxBatch - this.running.length;
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
        sampler: new RowSampler(spec.sampling, this.opts.stopIds, spec.constraint ?? null),
        slot: -1,
        len: 0,
        last: -1,
        generated: 0,
        arrived: now,
        lastTokenAt: now,
        cancelled: false,
        done: false,
      };
      this.waiting.push(row);
      return row;
    });
    this.gauges();
    this.wake?.();
    return rows.map((row) => ({
      cancel: () => {
        if (row.done) return;
        row.cancelled = true;
        this.wake?.();
      },
    }));
  }

  /** Stops accepting; lets queued and running sequences finish for up to `deadlineMs`, then ends the
   * rest (finish_reason 'abort'), stops the loop and frees the caches. */
  async shutdown(deadlineMs: number): Promise<void> {
    this.accepting = false;
    const until = Date.now() + deadlineMs;
    while (!this.idle && Date.now() < until) await new Promise((resolve) => setTimeout(resolve, 10));
    this.stopped = true;
    this.wake?.();
    await this.loopDone;
    for (const row of [...this.waiting.splice(0), ...this.running]) this.finish(row, 'abort');
    this.running = [];
    this.stacks.clear();
    this.pool.dispose();
  }

  private async loop(): Promise<void> {
    while (!this.stopped) {
      if (this.idle) {
        // A quiet spell: the KV caches go (memory back to where it was before the first request).
        if (!(await this.waitForWork(this.opts.idleReleaseMs ?? IDLE_RELEASE_MS)) && this.idle && this.pool.empty)
          this.pool.dispose();
        continue;
      }
      // Requests on the wire together (a burst, or clients whose replies ended in the same step) reach the
      // queue over a few turns of the event loop: gathered first, they are prefilled as one batch.
      if (this.waiting.length > 0 && this.running.length < this.opts.maxBatch) await this.gather();
      try {
        this.sweep();
        this.admit();
        if (this.running.length > 0) this.step();
        this.sweep();
        this.gauges();
        // Nothing left to run: the stacked copies of adapters go now (memory back where it was, an
        // unloaded adapter's copies with it), before the last responses reach their clients.
        if (this.idle) this.stacks.clear();
      } catch (e) {
        // A bug here must not stop the loop: the rows it touched fail, the server goes on.
        for (const row of this.running) this.fail(row, e);
        this.running = [];
      }
      // Let the event loop run between steps: responses flush, requests arrive, clients disconnect.
      await nextTurn();
    }
  }

  /** Lets the event loop run while sequences keep joining the queue, for at most GATHER_TURNS turns: each
   * turn costs microseconds when nothing is pending, and one prefill of the burst costs less than one
   * each (8 prompts of 32 tokens: 4 batches instead of 24 single prefills in the serving benchmark, and 8
   * clients' tokens/s up by 10-15%). */
  private async gather(): Promise<void> {
    let seen = this.waiting.length;
    for (let turn = 0; turn < GATHER_TURNS && !this.stopped; turn++) {
      await nextTurn();
      if (this.waiting.length === seen) return;
      seen = this.waiting.length;
    }
  }

  /** Waits until work arrives (true) or `ms` pass (false); a wait of 0 ms or less waits for work only. */
  private async waitForWork(ms: number): Promise<boolean> {
    let timer: NodeJS.Timeout | null = null;
    try {
      return await new Promise<boolean>((resolve) => {
        this.wake = () => resolve(true);
        if (ms > 0 && this.pool.capacity > 0) {
          timer = setTimeout(() => resolve(false), ms);
          timer.unref(); // an idle engine does not keep the process alive
        }
      });
    } finally {
      if (timer) clearTimeout(timer);
      this.wake = null;
    }
  }

  /** Drops cancelled rows (a client went away) and finished ones. */
  private sweep(): void {
    for (let i = this.waiting.length - 1; i >= 0; i--) {
      const row = this.waiting[i]!;
      if (row.cancelled) {
        this.waiting.splice(i, 1);
        this.finish(row, 'abort');
      }
    }
    for (const row of this.running) if (row.cancelled && !row.done) this.finish(row, 'abort');
    this.running = this.running.filter((row) => !row.done);
  }

  /** Prefills waiting sequences while slots are free: a lone one alone (batch 1, as `generate` does),
   * several that arrived together in batches, left-padded to the longest prompt (as `generate` pads a
   * batch), of at most PREFILL_TOKENS padded positions, so that a burst of requests costs one forward
   * instead of one each. */
  private admit(): void {
    while (this.waiting.length > 0 && this.running.length < this.opts.maxBatch && this.pool.freeSlots > 0) {
      const room = Math.min(this.opts.maxBatch - this.running.length, this.pool.freeSlots);
      const batch: Row[] = [];
      let longest = 0;
      while (batch.length < room && this.waiting.length > 0) {
        const next = this.waiting[0]!;
        const P = Math.max(longest, next.spec.prompt.length);
        if (batch.length > 0 && P * (batch.length + 1) > PREFILL_TOKENS) break;
        this.waiting.shift();
        try {
          next.slot = this.pool.acquire(next.spec.prompt.length + 1);
        } catch (e) {
          this.fail(next, e);
          continue;
        }
        batch.push(next);
        longest = P;
      }
      if (batch.length > 0) this.prefill(batch);
    }
  }

  /** One forward over the prompts of `batch` (slots acquired): each row's first token (and its prompt's
   * log-probabilities when asked for), and the rows join. */
  private prefill(batch: Row[]): void {
    const { ordered, ranges } = byAdapter(batch);
    const hooks = ranges.every((range) => range.adapter === null)
      ? undefined
      : new AdapterBatch(ranges, { training: false, record: 'none' });
    const P = Math.max(...ordered.map((row) => row.spec.prompt.length));
    // Left padding: every prompt ends at position P - 1, where the last-position logits are read.
    const gap = (row: Row) => P - row.spec.prompt.length;
    const toScore: PromptToScore[] = [];
    ordered.forEach((row, i) => {
      const top = row.spec.promptLogprobs;
      if (top != null) toScore.push({ row: i, start: gap(row), ids: row.spec.prompt, top });
    });
    let chosen: TokenChoice[];
    let scores: PromptScore[][] = [];
    try {
      ({ chosen, scores } = this.nextTokens(
        ordered,
        hooks,
        () => {
          const device = this.model.device;
          if (ordered.length === 1) {
            const row = ordered[0]!;
            const ids = tensor([row.spec.prompt], { dtype: 'int64', device }); // [1, P]
            return { ids, cache: this.pool.prefillCache(row.slot), attentionMask: null };
          }
          const ids = tensor(
            ordered.map((row) => [...new Array<number>(gap(row)).fill(0), ...row.spec.prompt]),
            { dtype: 'int64', device },
          ); // [B, P]
          const attentionMask = tensor(
            ordered.map((row) => Array.from({ length: P }, (_, j) => (j < gap(row) ? 0 : 1))),
            { dtype: 'int64', device },
          ); // [B, P]
          const rows = ordered.map((row) => ({ slot: row.slot, len: row.spec.prompt.length }));
          return { ids, cache: this.pool.prefillBatchCache(rows, P), attentionMask };
        },
        toScore,
      ));
    } catch (e) {
      // One sequence's fault must not fail the others that arrived with it: alone, each gets its own answer.
      if (ordered.length > 1) for (const row of ordered) this.prefill([row]);
      else this.fail(ordered[0]!, e);
      return;
    }
    this.peakPrefill = Math.max(this.peakPrefill, ordered.length);
    toScore.forEach((s, i) => {
      const row = ordered[s.row]!;
      try {
        row.spec.sink.onPrompt?.(scores[i]!);
      } catch (e) {
        this.fail(row, e);
      }
    });
    ordered.forEach((row, i) => {
      if (row.done) return;
      this.opts.metrics.promptTokens.inc({ model: row.spec.modelName }, row.spec.prompt.length);
      row.len = row.spec.prompt.length;
      // Scoring only (max_tokens 0): the prompt was the work.
      if (row.spec.maxTokens === 0) return this.finish(row, 'length');
      this.running.push(row);
      this.accept(row, chosen[i]!);
    });
  }

  /** One decode step over every running row, rows grouped by adapter. */
  private step(): void {
    const rows = this.running.filter((row) => !row.done);
    if (rows.length === 0) return;
    this.peakBatch = Math.max(this.peakBatch, rows.length);
    try {
      this.pool.reserve(Math.max(...rows.map((row) => row.len)) + 1);
    } catch (e) {
      for (const row of rows) this.fail(row, e);
      return;
    }
    const { ordered, ranges } = byAdapter(rows);
    // Base-model-only steps run the plain hooks, exactly as `generate` without an adapter.
    const hooks = ranges.every((range) => range.adapter === null)
      ? undefined
      : new AdapterBatch(ranges, { training: false, record: 'none', stacks: this.stacks });
    let chosen: TokenChoice[];
    try {
      ({ chosen } = this.nextTokens(ordered, hooks, () => {
        const { cache, keyMask } = this.pool.stepCache(ordered);
        const ids = tensor(
          ordered.map((row) => [row.last]),
          { dtype: 'int64', device: this.model.device },
        ); // [B, 1]
        return { ids, cache, attentionMask: keyMask };
      }));
    } catch (e) {
      for (const row of ordered) this.fail(row, e);
      return;
    }
    ordered.forEach((row, i) => {
      row.len += 1;
      this.accept(row, chosen[i]!);
    });
  }

  /** The forward over `ordered`'s inputs (made under the step's scope), each row's next token, and the
   * log-probabilities of the prompts in `toScore` (prefill only); the hooks are disposed after. */
  private nextTokens(
    ordered: Row[],
    hooks: AdapterBatch | undefined,
    inputs: () => { ids: Tensor; cache: AttentionCache; attentionMask: Tensor | null },
    toScore: PromptToScore[] = [],
  ): { chosen: TokenChoice[]; scores: PromptScore[][] } {
    try {
      return noGrad(() =>
        tidy(() => {
          const { ids, cache, attentionMask } = inputs();
          if (toScore.length === 0) {
            const logits = this.model.forward(ids, { attentionMask, cache, hooks, lastOnly: true }).select(1, 0); // [B, V]
            return { chosen: this.chooseTokens(logits, ordered), scores: [] };
          }
          const h = this.model.lastHidden(ids, { attentionMask, cache, hooks }); // [B, P, H]
          const scores = scorePrompts(this.model, h, toScore);
          const logits = this.model.head(h.narrow(1, h.size(1) - 1, 1)).select(1, 0); // [B, V]
          return { chosen: this.chooseTokens(logits, ordered), scores };
        }),
      );
    } finally {
      hooks?.dispose();
    }
  }

  /** Each row's token from logits [B, V]: argmax on the device; the rows that sample, report
   * log-probabilities or process their logits get theirs on the host (one copy for the batch). */
  private chooseTokens(logits: Tensor, rows: Row[]): TokenChoice[] {
    const greedy = logits.argmax(-1).toNumbers(); // [B]
    const needs = rows.map((row) => row.spec.maxTokens > 0 && row.sampler.needsLogits);
    const host = needs.some((x) => x) ? logits.contiguous().toFloat32Array() : null; // [B · V]
    const V = logits.size(1);
    return rows.map((row, i) => {
      if (row.spec.maxTokens === 0) return { id: greedy[i]! }; // scoring only: nothing is chosen
      return row.sampler.pick(greedy[i]!, needs[i] ? host!.subarray(i * V, (i + 1) * V) : null);
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
    let stop = false;
    try {
      stop = row.spec.sink.onToken(choice);
    } catch (e) {
      this.fail(row, e);
      return;
    }
    const p = row.spec.sampling;
    const ends = (!p.ignoreEos && this.opts.stopIds.includes(choice.id)) || (p.stopTokenIds ?? []).includes(choice.id);
    if (stop || ends) this.finish(row, 'stop');
    else if (row.generated >= row.spec.maxTokens) this.finish(row, 'length');
  }

  private finish(row: Row, reason: FinishReason, error?: Error): void {
    if (row.done) return;
    row.done = true;
    row.sampler.dispose();
    if (row.slot >= 0) {
      this.pool.release(row.slot);
      row.slot = -1;
    }
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
    this.opts.metrics.queueDepth.set(this.waiting.length);
    this.opts.metrics.runningBatch.set(this.running.filter((row) => !row.done).length);
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
