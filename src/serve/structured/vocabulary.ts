// A tokenizer's vocabulary as the grammar engine sees it: the bytes each token id stands for. We decode
// the tokens ourselves from tokenizer.json's decoder (SentencePiece's "▁" and <0xNN> byte-fallback
// tokens, GPT-2 byte-level BPE, Metaspace), make special tokens empty (XGrammar never allows those)
// and hand XGrammar every token in the byte-level form, so it needs no knowledge of our tokenizers.
// Built once per (tokenizer, logits width, stop ids): the scan and XGrammar's index of the vocabulary
// are the expensive part. Each vocabulary keeps its compiled grammars in a small LRU.
import type { TextTokenizer } from '../../tokenizer/tokenizer.js';
import { VocabularyStats } from './cost.js';
import { liveObjects, mainInstance, serially, type WasmInstance } from './wasm.js';
import type { XCompiledGrammar, XGrammarCompiler } from './wasm.js';
import type { XGrammarMatcher, XTokenizerInfo } from './wasm.js';

export interface VocabularyOptions {
  /** Width of the model's logits: the mask covers ids [0, vocabSize). Ids the tokenizer lacks are never
   * allowed (padded output layers; the LLaMA-2 tokenizer has 31998 distinct pieces for 32000 ids). */
  vocabSize: number;
  /** Ids that end a completion (only these are allowed once the grammar is complete); default: EOS. */
  stopIds?: number[];
  /** Compiled grammars kept per vocabulary (least recently used dropped first); default 64. */
  cacheSize?: number;
}

export const GRAMMAR_CACHE_SIZE = 64;

// ---- token bytes ---------------------------------------------------------------------------------

/** GPT-2's bytes_to_unicode: byte -> printable character, and back. */
const BYTE_TO_CHAR: string[] = [];
const CHAR_TO_BYTE = new Map<string, number>();
{
  const direct = (b: number) => (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    const c = String.fromCharCode(direct(b) ? b : 256 + extra++);
    BYTE_TO_CHAR[b] = c;
    CHAR_TO_BYTE.set(c, b);
  }
}

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

/** The decoders of tokenizer.json, a Sequence flattened. */
function decoders(tokenizerJson: object): Json[] {
  const out: Json[] = [];
  const walk = (d: unknown) => {
    if (!isObject(d)) return;
    if (d.type === 'Sequence' && Array.isArray(d.decoders)) d.decoders.forEach(walk);
    else out.push(d);
  };
  walk((tokenizerJson as Json).decoder);
  return out;
}

const utf8 = (s: string) => new Uint8Array(Buffer.from(s, 'utf8'));

/** The bytes each id in [0, vocabSize) decodes to inside a text; null for special tokens and ids the
 * tokenizer does not have. (Decoder steps that act only at the start of a text, such as Strip, are left out.) */
export function tokenBytes(tokenizer: TextTokenizer, vocabSize: number): (Uint8Array | null)[] {
  const ds = decoders(tokenizer.tokenizerJson);
  const byteLevel = ds.some((d) => d.type === 'ByteLevel');
  const byteFallback = ds.some((d) => d.type === 'ByteFallback');
  const replacements: [string, string][] = [];
  for (const d of ds) {
    if (d.type === 'Replace' && isObject(d.pattern) && typeof d.pattern.String === 'string')
      replacements.push([d.pattern.String, typeof d.content === 'string' ? d.content : '']);
    if (d.type === 'Metaspace') replacements.push([typeof d.replacement === 'string' ? d.replacement : '▁', ' ']);
  }
  const added = new Map<number, { content: string; special: boolean }>();
  const addedTokens = (tokenizer.tokenizerJson as Json).added_tokens;
  if (Array.isArray(addedTokens))
    for (const t of addedTokens)
      if (isObject(t) && typeof t.id === 'number' && typeof t.content === 'string')
        added.set(t.id, { content: t.content, special: t.special === true });

  const out: (Uint8Array | null)[] = new Array(vocabSize);
  for (let id = 0; id < vocabSize; id++) {
    const a = added.get(id);
    if (a) {
      // Added tokens are matched and decoded as their literal content, outside the model's encoding.
      out[id] = a.special ? null : utf8(a.content);
      continue;
    }
    const token = tokenizer.idToToken(id);
    if (token === null) {
      out[id] = null;
    } else if (byteLevel) {
      const bytes = new Uint8Array(token.length);
      let ok = true;
      for (let i = 0; i < token.length && ok; i++) {
        const b = CHAR_TO_BYTE.get(token[i]!);
        if (b === undefined) ok = false;
        else bytes[i] = b;
      }
      out[id] = ok ? bytes : utf8(token);
    } else if (byteFallback && /^<0x[0-9A-Fa-f]{2}>$/.test(token)) {
      out[id] = Uint8Array.of(parseInt(token.slice(3, 5), 16));
    } else {
      let text = token;
      for (const [from, to] of replacements) text = text.replaceAll(from, to);
      out[id] = utf8(text);
    }
  }
  return out;
}

/** Whether the tokenizer puts a space before the text (XGrammar keeps it as metadata). */
function addsPrefixSpace(tokenizerJson: object): boolean {
  const j = tokenizerJson as Json;
  const normalizers = isObject(j.normalizer)
    ? j.normalizer.type === 'Sequence' && Array.isArray(j.normalizer.normalizers)
      ? j.normalizer.normalizers
      : [j.normalizer]
    : [];
  if (normalizers.some((n) => isObject(n) && n.type === 'Prepend' && n.prepend === '▁')) return true;
  const pre = j.pre_tokenizer;
  return (
    isObject(pre) && pre.type === 'Metaspace' && (pre.prepend_scheme === 'always' || pre.prepend_scheme === 'first')
  );
}

// ---- the engine's vocabulary ---------------------------------------------------------------------

/** A tokenizer's vocabulary in the grammar engine, with its compiled grammars. */
export class GrammarVocabulary {
  private readonly cache = new Map<string, XCompiledGrammar>(); // insertion order = least recently used first
  private disposed = false;

  private constructor(
    readonly instance: WasmInstance,
    private readonly info: XTokenizerInfo,
    private readonly compiler: XGrammarCompiler,
    readonly vocabSize: number,
    readonly stopIds: readonly number[],
    readonly cacheSize: number,
    /** The tokens by first character: what compiling a grammar for this vocabulary costs (cost.ts). */
    readonly stats: VocabularyStats,
  ) {
    liveObjects.vocabularies++;
  }

  static async build(tokenizer: TextTokenizer, opts: VocabularyOptions): Promise<GrammarVocabulary> {
    const { vocabSize } = opts;
    const stopIds = opts.stopIds ?? (tokenizer.eosId === null ? [] : [tokenizer.eosId]);
    if (!Number.isInteger(vocabSize) || vocabSize <= 0) throw new Error(`invalid vocabulary size ${vocabSize}`);
    if (stopIds.length === 0) throw new Error(`${tokenizer.source}: no stop token (EOS) to end a structured output`);
    for (const id of stopIds)
      if (!Number.isInteger(id) || id < 0 || id >= vocabSize) throw new Error(`stop token id ${id} out of range`);
    // Two pieces of work on the event loop (tens of ms each for 32k tokens), queued with the others.
    const { encoded, stats } = await serially(() => {
      const bytes = tokenBytes(tokenizer, vocabSize);
      for (const id of stopIds) bytes[id] = null; // matched by id, never as text
      const encoded = bytes.map((b) => {
        if (b === null) return '';
        let s = '';
        for (const x of b) s += BYTE_TO_CHAR[x];
        return s;
      });
      return { encoded, stats: new VocabularyStats(bytes) };
    });
    const instance = await mainInstance();
    return serially(() =>
      instance.call((b) => {
        const vocab = b.vecStringFromJSArray(encoded);
        const stops = b.vecIntFromJSArray([...stopIds]);
        let info: XTokenizerInfo | null = null;
        try {
          info = new b.TokenizerInfo(vocab, 'BYTE_LEVEL', vocabSize, stops, addsPrefixSpace(tokenizer.tokenizerJson));
          // XGrammar's own cache keys on the grammar; ours (by schema) is the one that bounds memory.
          const compiler = new b.GrammarCompiler(info, 1, false);
          return new GrammarVocabulary(
            instance,
            info,
            compiler,
            vocabSize,
            [...stopIds],
            opts.cacheSize ?? GRAMMAR_CACHE_SIZE,
            stats,
          );
        } catch (e) {
          if (info && !instance.broken) info.delete();
          throw e;
        } finally {
          if (!instance.broken) {
            vocab.delete();
            stops.delete();
          }
        }
      }),
    );
  }

  get usable(): boolean {
    return !this.disposed && !this.instance.broken;
  }

  /** Whether the grammar `key` is compiled (a matcher for it costs no compilation). */
  has(key: string): boolean {
    return this.cache.has(key);
  }

  /** Number of compiled grammars held. */
  get cachedGrammars(): number {
    return this.cache.size;
  }

  /** A matcher at the start of the grammar `key`, compiled from `ebnf` (root rule `root`) when not cached.
   * The matcher keeps its own reference to the compiled grammar: evicting it later is safe. */
  matcher(key: string, ebnf: string, root: string): XGrammarMatcher {
    if (!this.usable) throw new Error('internal error: the grammar vocabulary was released');
    const compiled = this.compiled(key, ebnf, root);
    const m = this.instance.call((b) => new b.GrammarMatcher(compiled, undefined, false, -1));
    liveObjects.matchers++;
    return m;
  }

  /** Compiles `ebnf` into the cache (for a grammar checked by the checker instance: this cannot abort on
   * users' input). */
  compiled(key: string, ebnf: string, root: string): XCompiledGrammar {
    const hit = this.cache.get(key);
    if (hit) {
      this.cache.delete(key);
      this.cache.set(key, hit);
      return hit;
    }
    const compiled = this.instance.call((b) => {
      const grammar = b.Grammar.FromEBNF(ebnf, root);
      try {
        return this.compiler.CompileGrammar(grammar);
      } finally {
        if (!this.instance.broken) grammar.delete();
      }
    });
    liveObjects.grammars++;
    this.cache.set(key, compiled);
    while (this.cache.size > this.cacheSize) {
      const [oldKey, old] = this.cache.entries().next().value!;
      this.cache.delete(oldKey);
      old.delete();
      liveObjects.grammars--;
    }
    return compiled;
  }

  /** Compiles `ebnf` and frees the result at once, the cache left alone (bench/structured.ts times it). */
  compileUncached(ebnf: string, root: string): void {
    if (!this.usable) throw new Error('internal error: the grammar vocabulary was released');
    this.instance.call((b) => {
      const grammar = b.Grammar.FromEBNF(ebnf, root);
      try {
        this.compiler.CompileGrammar(grammar).delete();
      } finally {
        grammar.delete();
      }
    });
  }

  /** Frees the vocabulary and its compiled grammars (matchers made from them stay valid). */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    // A broken instance is abandoned whole: its objects are not called into again.
    const free = !this.instance.broken;
    if (free) for (const g of this.cache.values()) g.delete();
    liveObjects.grammars -= this.cache.size;
    this.cache.clear();
    if (free) {
      this.compiler.delete();
      this.info.delete();
    }
    liveObjects.vocabularies--;
  }
}

const vocabularies = new Map<TextTokenizer, Map<string, Promise<GrammarVocabulary>>>();

/** The grammar vocabulary of `tokenizer` for these options, built on first use and then shared. */
export async function grammarVocabulary(tokenizer: TextTokenizer, opts: VocabularyOptions): Promise<GrammarVocabulary> {
  const key = JSON.stringify([opts.vocabSize, opts.stopIds ?? null, opts.cacheSize ?? null]);
  let byOpts = vocabularies.get(tokenizer);
  if (!byOpts) vocabularies.set(tokenizer, (byOpts = new Map()));
  const cached = byOpts.get(key);
  if (cached) {
    const v = await cached.catch(() => null);
    if (v?.usable) return v;
    if (byOpts.get(key) !== cached) return grammarVocabulary(tokenizer, opts); // another caller rebuilt it
    v?.dispose();
  }
  const built = GrammarVocabulary.build(tokenizer, opts);
  byOpts.set(key, built);
  built.catch(() => {
    if (byOpts.get(key) === built) byOpts.delete(key);
  });
  return built;
}

/** Frees the grammar vocabularies of `tokenizer` (all of them when omitted): call it when a model is
 * unloaded. Constraints already made stay valid until disposed. */
export async function releaseGrammarVocabularies(tokenizer?: TextTokenizer): Promise<void> {
  const tokenizers = tokenizer ? [tokenizer] : [...vocabularies.keys()];
  for (const t of tokenizers) {
    const byOpts = vocabularies.get(t);
    vocabularies.delete(t);
    for (const p of byOpts?.values() ?? []) (await p.catch(() => null))?.dispose();
  }
}
