// The application API for inference: a loaded model with its tokenizer and adapters, and text in, text out.
// Built on the modules the command line uses (models/load.ts, generate/generate.ts, eval/perplexity.ts), so
// that `llm.generate` equals `mixlora generate` and `llm.score` equals `mixlora perplexity`. Every call runs
// its tensors in scopes of its own and frees them before it returns; generation awaits between decode steps,
// so the event loop keeps running while a completion is produced.
import { setImmediate as nextTurn } from 'node:timers/promises';
import path from 'node:path';
import type { Adapter } from '../adapters/adapter.js';
import { AdapterBatch } from '../adapters/batch.js';
import { loadAdapter } from '../adapters/io.js';
import type { PerplexityExample } from '../eval/perplexity.js';
import { perplexity } from '../eval/perplexity.js';
import { loglikRows } from '../eval/scoring.js';
import { generateSteps } from '../generate/generate.js';
import type { CausalLM } from '../models/causal-lm.js';
import { loadModel } from '../models/load.js';
import { resolveModel } from '../models/hub.js';
import { parseQuantFormat, type QuantFormat } from '../quant/format.js';
import { setNumThreads } from '../tensor/runtime.js';
import { parseDevice, parseDType } from '../tensor/targets.js';
import type { ChatMessage, TextTokenizer } from '../tokenizer/tokenizer.js';
import { UserError } from '../util/errors.js';

export type { ChatMessage } from '../tokenizer/tokenizer.js';

/** Options of {@link LLM.load}. Every field is optional. */
export interface LLMLoadOptions {
  /**
   * Adapters to load with the model (LoRA, DoRA, MixLoRA or MixDoRA folders, as `mixlora train` writes them):
   * a list of folders, each named by its folder name, or `{ name: folder }`. More can be added later with
   * {@link LLM.loadAdapter}. Default: none.
   */
  adapters?: string[] | Record<string, string>;
  /** Compute dtype of the frozen weights: `float32` (default), `bfloat16` or `float16`. */
  dtype?: 'float32' | 'bfloat16' | 'float16';
  /** Keep the base model's decoder projections quantised: `int8` or `nf4`. Default: not quantised. */
  quantize?: QuantFormat;
  /** `cpu` (default), `cuda` or `cuda:N` (needs an addon built against a CUDA libtorch). */
  device?: string;
  /** A tokenizer file or folder, when the model's own is not beside it (llama2.c checkpoints: their tok*.bin). */
  tokenizer?: string;
  /** CPU threads of libtorch, for the whole process. Default: libtorch's (all cores, or MIXLORA_NUM_THREADS). */
  threads?: number;
}

/** Options of {@link LLM.generate}, {@link LLM.stream} and {@link LLM.chat}. Every field is optional. */
export interface GenerationOptions {
  /** The loaded adapter to generate with, by name. Default: the base model alone. */
  adapter?: string;
  /** Tokens to generate at most (default 128); fewer when the model's context ends first. */
  maxTokens?: number;
  /** Sampling temperature; 0 (default) is greedy decoding, the same text on every call. */
  temperature?: number;
  /** Sample among the k most likely tokens only. Default: no limit. */
  topK?: number;
  /** Nucleus sampling: sample among the smallest set of tokens with probability ≥ topP. Default: 1 (no limit). */
  topP?: number;
  /** Divide the logits of tokens already present by this (> 1 discourages repeats). Default: 1 (none). */
  repetitionPenalty?: number;
  /** Seed of the sampler, for reproducible sampling (when no other call samples at the same time). */
  seed?: number;
  /** Stops the generation: the call then ends with what was generated so far. */
  signal?: AbortSignal;
}

/** Options of {@link LLM.score} and {@link LLM.perplexity}. */
export interface ScoreOptions {
  /** The loaded adapter to score with, by name. Default: the base model alone. */
  adapter?: string;
  /** Texts per forward pass (default 8, as `mixlora perplexity`). */
  batchSize?: number;
}

/** A text to score: the whole text, or a completion after a prompt (the text is encoded whole; the tokens after
 * the prompt's are scored, as lm-evaluation-harness and `mixlora eval --scoring loglik` do). */
export type ScoredText =
  | string
  | {
      /** The text before the completion (not scored). */
      prompt: string;
      /** The text scored after the prompt (its leading space included, as it follows the prompt). */
      completion: string;
    };

/** The log-likelihood of one scored text. */
export interface TextScore {
  /** Sum of the natural-log probabilities of the scored tokens (≤ 0). */
  logprob: number;
  /** Tokens scored: every token after the first of a text; the completion's tokens of a prompt/completion pair. */
  tokens: number;
  /** exp(−logprob / tokens); null when no token was scored. */
  perplexity: number | null;
}

const DEFAULT_MAX_TOKENS = 128;
const DEFAULT_SCORE_BATCH = 8;
/** Prompt tokens decoded before the new ones while streaming (the text a token adds can depend on them). */
const STREAM_CONTEXT = 16;

/**
 * A causal language model loaded for inference, with its tokenizer and any number of adapters. Create it with
 * {@link LLM.load}; free it with {@link LLM.dispose}. Calls may overlap (their decode steps interleave).
 *
 * @example
 * ```ts
 * const llm = await LLM.load('stories260K.bin', { tokenizer: 'tok512.bin', adapters: { lora: 'runs/lora' } });
 * console.log(await llm.generate('Once upon a time', { adapter: 'lora', maxTokens: 32 }));
 * for await (const piece of llm.stream('Once upon a time')) process.stdout.write(piece);
 * llm.dispose();
 * ```
 */
export class LLM {
  private readonly loaded = new Map<string, Adapter>();
  private disposed = false;

  private constructor(
    /** The model (the low-level API: forward passes, weights). Owned by this LLM. */
    readonly model: CausalLM,
    /** The model's tokenizer. */
    readonly tokenizer: TextTokenizer,
    /** Where the model was loaded from (a Hub id resolved to its local snapshot). */
    readonly path: string,
  ) {}

  /**
   * Loads a model: a Hugging Face folder, a llama2.c checkpoint, or a Hub id (`org/name[@revision]`, downloaded
   * into the Hugging Face cache when not there yet), with the adapters given.
   */
  static async load(pathOrHubId: string, options: LLMLoadOptions = {}): Promise<LLM> {
    if (options.threads !== undefined) setNumThreads(options.threads);
    const where = await resolveModel(pathOrHubId);
    const { model, tokenizer } = loadModel(where, {
      dtype: parseDType(options.dtype ?? 'float32', 'dtype'),
      device: parseDevice(options.device ?? 'cpu', 'device'),
      tokenizer: options.tokenizer ?? null,
      quantize: options.quantize === undefined ? null : parseQuantFormat(options.quantize, 'quantize'),
    });
    const llm = new LLM(model, tokenizer, where);
    try {
      const adapters = options.adapters ?? [];
      const entries = Array.isArray(adapters)
        ? adapters.map((dir) => [undefined, dir] as const)
        : Object.entries(adapters);
      for (const [name, dir] of entries) await llm.loadAdapter(dir, name);
    } catch (e) {
      llm.dispose();
      throw e;
    }
    return llm;
  }

  /** Names of the loaded adapters. */
  get adapters(): string[] {
    return [...this.loaded.keys()];
  }

  /**
   * Loads one more adapter (e.g. one a training run just wrote); returns its name: `name`, else the folder's
   * name. A name already in use is refused.
   */
  async loadAdapter(folder: string, name?: string): Promise<string> {
    this.check();
    const adapterName = name ?? path.basename(path.resolve(folder));
    if (this.loaded.has(adapterName))
      throw new UserError(`an adapter named '${adapterName}' is already loaded (give another name)`);
    // Inference never changes an adapter: its DoRA scales are computed once.
    const adapter = (await loadAdapter(folder, this.model, adapterName)).freezeForInference(this.model);
    if (this.disposed) {
      adapter.dispose();
      this.check();
    }
    this.loaded.set(adapterName, adapter);
    return adapterName;
  }

  /** Frees a loaded adapter's tensors; later calls naming it are refused. */
  unloadAdapter(name: string): void {
    const adapter = this.adapterOf(name);
    this.loaded.delete(name);
    adapter?.dispose();
  }

  /** The completion of `prompt` (the prompt is encoded with the tokenizer's special tokens, as `mixlora generate`
   * does); without the stop token. */
  async generate(prompt: string, options: GenerationOptions = {}): Promise<string> {
    const ids = this.encodePrompt(prompt);
    let last: number[] = [];
    for await (const sofar of this.decode(ids, options)) last = sofar;
    return this.tokenizer.decodeContinuation(ids, last);
  }

  /**
   * The completion of a prompt as it is generated, piece by piece; the pieces add up to what
   * {@link LLM.generate} returns. Chat messages (an array) are rendered with the chat template first, as
   * {@link LLM.chat} does. Leaving the loop early stops the generation.
   */
  async *stream(input: string | ChatMessage[], options: GenerationOptions = {}): AsyncGenerator<string, void, void> {
    const ids = typeof input === 'string' ? this.encodePrompt(input) : await this.encodeChat(input);
    const context = ids.slice(-STREAM_CONTEXT);
    let sent = '';
    let last: number[] = [];
    for await (const sofar of this.decode(ids, options)) {
      last = sofar;
      const text = this.tokenizer.decodeContinuation(context, sofar);
      // A character whose bytes are not all generated yet decodes as U+FFFD: held back until it is complete.
      const stable = text.replace(/\uFFFD+$/, '');
      if (stable.length > sent.length && stable.startsWith(sent)) {
        yield stable.slice(sent.length);
        sent = stable;
      }
    }
    const full = this.tokenizer.decodeContinuation(ids, last);
    if (full.startsWith(sent) && full.length > sent.length) yield full.slice(sent.length);
  }

  /** The assistant's reply to `messages`, rendered with the tokenizer's chat template (as `mixlora generate
   * --chat` and the server's chat completions do). Refused when the tokenizer has no chat template. */
  async chat(messages: ChatMessage[], options: GenerationOptions = {}): Promise<string> {
    const ids = await this.encodeChat(messages);
    let last: number[] = [];
    for await (const sofar of this.decode(ids, options)) last = sofar;
    return this.tokenizer.decodeContinuation(ids, last);
  }

  /** Log-likelihood of one text under the model (or adapter). */
  score(text: ScoredText, options?: ScoreOptions): Promise<TextScore>;
  /** Log-likelihoods of texts, in order; the numbers of `mixlora perplexity` for whole texts. */
  score(texts: ScoredText[], options?: ScoreOptions): Promise<TextScore[]>;
  async score(texts: ScoredText | ScoredText[], options: ScoreOptions = {}): Promise<TextScore | TextScore[]> {
    const list = Array.isArray(texts) ? texts : [texts];
    const scored = (await this.nll(list, options)).map(({ nll, tokens }) => ({
      logprob: nll === null ? 0 : -nll * tokens,
      tokens,
      perplexity: nll === null ? null : Math.exp(nll),
    }));
    return Array.isArray(texts) ? scored : scored[0]!;
  }

  /** Perplexity over texts: exp of the mean negative log-likelihood per scored token, all texts together (what
   * `mixlora perplexity` prints). */
  async perplexity(texts: ScoredText[], options: ScoreOptions = {}): Promise<number> {
    const scored = await this.nll(texts, options);
    let sum = 0;
    let tokens = 0;
    for (const s of scored) {
      if (s.nll === null) continue;
      sum += s.nll * s.tokens;
      tokens += s.tokens;
    }
    if (tokens === 0) throw new UserError('perplexity: no token to score (each text needs at least two tokens)');
    return Math.exp(sum / tokens);
  }

  /** Frees the model and its adapters; a call still running ends with an error at its next step. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const a of this.loaded.values()) a.dispose();
    this.loaded.clear();
    this.model.dispose();
  }

  private check(): void {
    if (this.disposed) throw new UserError('this LLM was disposed');
  }

  private adapterOf(name: string | undefined): Adapter | null {
    this.check();
    if (name === undefined) return null;
    const a = this.loaded.get(name);
    if (!a)
      throw new UserError(
        `no adapter named '${name}' is loaded (${this.loaded.size ? `loaded: ${this.adapters.join(', ')}` : 'none is'})`,
      );
    return a;
  }

  private encodePrompt(prompt: string): number[] {
    this.check();
    return this.tokenizer.encode(prompt);
  }

  private async encodeChat(messages: ChatMessage[]): Promise<number[]> {
    this.check();
    // A chat template writes its own special tokens (as transformers' apply_chat_template does).
    const text = await this.tokenizer.applyChatTemplateAsync(messages, { addGenerationPrompt: true });
    return this.tokenizer.encode(text, { special: false });
  }

  /** The new tokens so far (stop tokens left out), after each decode step; awaits a turn of the event loop
   * between steps. The adapter's batch and the decode state are freed when the loop ends, however it ends. */
  private async *decode(prompt: number[], o: GenerationOptions): AsyncGenerator<number[], void, void> {
    const adapter = this.adapterOf(o.adapter);
    const stopIds = this.model.config.eosTokenIds;
    const steps = generateSteps(this.model, [prompt], {
      maxNewTokens: o.maxTokens ?? DEFAULT_MAX_TOKENS,
      temperature: o.temperature ?? 0,
      topK: o.topK ?? null,
      topP: o.topP ?? null,
      repetitionPenalty: o.repetitionPenalty ?? null,
      seed: o.seed ?? null,
      stopIds,
      adapter,
    });
    const ids: number[] = [];
    try {
      for (;;) {
        if (o.signal?.aborted) break;
        this.check();
        if (adapter?.isDisposed) throw new UserError(`the adapter '${o.adapter}' was unloaded`);
        const r = steps.next();
        if (r.done) break;
        const id = r.value[0];
        if (id !== null && id !== undefined && !stopIds.includes(id)) ids.push(id);
        yield ids;
        await nextTurn();
      }
    } finally {
      steps.return();
    }
  }

  /** Mean NLL and scored tokens of each text, a batch at a time with a turn of the event loop between. */
  private async nll(texts: ScoredText[], o: ScoreOptions): Promise<{ nll: number | null; tokens: number }[]> {
    const adapter = this.adapterOf(o.adapter);
    const batchSize = o.batchSize ?? DEFAULT_SCORE_BATCH;
    if (!Number.isInteger(batchSize) || batchSize < 1) throw new UserError(`batchSize must be a positive integer`);
    const examples: PerplexityExample[] = texts.map((t) => {
      if (typeof t === 'string') {
        const ids = this.tokenizer.encode(t);
        return { inputIds: ids, labels: ids };
      }
      // As lm-evaluation-harness and `mixlora eval --scoring loglik`: the whole text encoded at once, its
      // tokens after the prompt's own encoding scored (a tokenizer may join the two across the boundary).
      const { ids, from } = loglikRows(this.tokenizer, { context: t.prompt, continuations: [t.completion] })[0]!;
      return { inputIds: ids, labels: ids.map((id, i) => (i < from ? -100 : id)) };
    });
    const out: { nll: number | null; tokens: number }[] = [];
    for (let start = 0; start < examples.length; start += batchSize) {
      this.check();
      const hooks = adapter ? AdapterBatch.all(adapter, { training: false }) : undefined;
      try {
        const r = perplexity(this.model, examples.slice(start, start + batchSize), {
          batchSize,
          ...(hooks ? { hooks } : {}),
        });
        out.push(...r.examples);
      } finally {
        hooks?.dispose();
      }
      await nextTurn();
    }
    return out;
  }
}
