// From a checked response_format to a grammar over a model's vocabulary. XGrammar turns the JSON
// Schema into an EBNF grammar in a separate "checker" instance (a schema it cannot handle aborts that
// instance, which is replaced, and becomes a 400 naming response_format.json_schema.schema); the
// grammar is then compiled for the vocabulary in the main instance. Output is compact JSON on one line
// (", " and ": " between items, no other whitespace, so a model cannot wander in whitespace), with one
// optional space before it (SentencePiece models tend to start an answer with "▁{"). For json_schema
// XGrammar's strict mode is on whatever `strict` says: properties the schema does not name are not
// generated (the output still validates against the schema).
//
// Converting and compiling run on the event loop, one piece at a time with a decode step between pieces
// (wasm.ts serially), and a grammar whose compilation is estimated (cost.ts) to take longer than
// COMPILE_BUDGET_MS is refused with a 400 that names the costliest part of the schema; the schema's size
// and depth are bounded before it is converted (schema-check.ts). Compiled grammars are cached: a schema
// seen before costs nothing.
import type { TextTokenizer } from '../../tokenizer/tokenizer.js';
import { ApiError, badRequest } from '../errors.js';
import { GrammarConstraint } from './constraint.js';
import { estimateCompile } from './cost.js';
import { fixIntegerRanges, RangeRefused } from './integer-ranges.js';
import { literalTries, PatternRefused, safePatterns } from './workarounds.js';
import { parseResponseFormat, type ResponseFormat } from './response-format.js';
import { stringParts, unsupportedSchemaPart } from './schema-check.js';
import { grammarVocabulary, type GrammarVocabulary, type VocabularyOptions } from './vocabulary.js';
import { checkerInstance, GrammarEngineError, serially } from './wasm.js';

/** The longest a grammar's compilation may be estimated to take (cost.ts), in milliseconds: the event
 * loop, so every request, waits for it. The estimate is above the measured time, so an accepted schema
 * compiles in less CPU time than this (at most 105 ms for the calibration corpus on an AMD EPYC Zen 3
 * core); other load on the machine stretches the wall time alike for everything the server does. */
export const COMPILE_BUDGET_MS = 150;
/** String subschemas examined to name the costliest part of a refused schema. */
const PARTS_EXAMINED = 32;

/** A grammar in XGrammar's EBNF, with the rule that starts it. */
export interface EbnfGrammar {
  /** Identifies the grammar in caches: the format's type and its schema as canonical JSON text
   * (JSON.stringify of the parsed request: formatting normalized, property order kept, as it orders the output). */
  key: string;
  ebnf: string;
  root: string;
}

const ROOT = 'response_root';
const MESSAGE_CHARS = 500;

/** Schema conversions kept (EBNF texts; small). */
const EBNF_CACHE_SIZE = 256;
const ebnfCache = new Map<string, EbnfGrammar>();

/** Conversions of integer ranges alone (fixIntegerRanges checks XGrammar's grammar for each). */
const rangeCache = new Map<string, string>();

/** XGrammar's EBNF for `schema` (the checker instance, queued with the other pieces of work); throws a
 * GrammarEngineError where XGrammar aborts, `refuse(warning)` where it warns that it gives up on a part. */
function convert(schema: unknown, strict: boolean, refuse: (reason: string) => Error): Promise<string> {
  return serially(async () => {
    const checker = await checkerInstance();
    return checker.call((b) => {
      const ebnf = b._JSONSchemaToEBNF(
        JSON.stringify(schema),
        false,
        undefined,
        undefined,
        strict,
        undefined,
        b.JSONFormat.kJSON,
      );
      // XGrammar warns where it gives up on part of a schema (the grammar would not enforce it).
      const warning = checker.warnings()[0];
      if (warning !== undefined) throw refuse(warning);
      return ebnf;
    });
  });
}

/** The grammar of a json_object or json_schema format; throws a 400 for a schema XGrammar refuses. */
export async function formatGrammar(format: Exclude<ResponseFormat, { type: 'text' }>): Promise<EbnfGrammar> {
  // json_object: any JSON object (XGrammar's strict mode would allow only {} for a schema without properties).
  const schema = format.type === 'json_object' ? { type: 'object' } : format.json_schema.schema;
  const strict = format.type === 'json_schema';
  const key = `${format.type}:${JSON.stringify(schema)}`;
  const hit = ebnfCache.get(key);
  if (hit) {
    ebnfCache.delete(key);
    ebnfCache.set(key, hit);
    return hit;
  }
  const name = format.type === 'json_schema' ? ` '${format.json_schema.name}'` : '';
  const refuse = (reason: string) => {
    if (reason.length > MESSAGE_CHARS) reason = `${reason.slice(0, MESSAGE_CHARS)}...`;
    return badRequest(
      `Invalid schema for response_format${name}: ${reason}`,
      'response_format.json_schema.schema',
      'invalid_json_schema',
    );
  };
  const unsupported = format.type === 'json_schema' ? unsupportedSchemaPart(schema) : null;
  if (unsupported !== null) throw refuse(unsupported);
  let grammar: EbnfGrammar;
  try {
    const fixed = await fixIntegerRanges(safePatterns(schema) as Record<string, unknown>, async (range) => {
      const k = JSON.stringify(range);
      let ebnf = rangeCache.get(k);
      if (ebnf === undefined) {
        ebnf = await convert(range, true, refuse);
        rangeCache.set(k, ebnf);
        if (rangeCache.size > EBNF_CACHE_SIZE) rangeCache.delete(rangeCache.keys().next().value!);
      }
      return ebnf;
    });
    const ebnf = literalTries(await convert(fixed, strict, refuse));
    let root = ROOT;
    while (new RegExp(`^${root} ::=`, 'm').test(ebnf)) root += '_';
    const full = `${ebnf}\n${root} ::= " "? root\n`;
    // Parse it here: what reaches the main instance is known to parse.
    await serially(async () => (await checkerInstance()).call((b) => b.Grammar.FromEBNF(full, root).delete()));
    grammar = { key, ebnf: full, root };
  } catch (e) {
    if (e instanceof RangeRefused || e instanceof PatternRefused) throw refuse(e.message);
    throw e instanceof GrammarEngineError ? refuse(e.message) : e;
  }
  ebnfCache.set(key, grammar);
  if (ebnfCache.size > EBNF_CACHE_SIZE) ebnfCache.delete(ebnfCache.keys().next().value!);
  return grammar;
}

/** A response format compiled for one vocabulary: makes a GrammarConstraint per row. Holds no WebAssembly
 * object itself (nothing to free): the compiled grammar sits in the vocabulary's LRU and is compiled
 * again if it was evicted meanwhile. */
export class ResponseGrammar {
  constructor(
    readonly format: Exclude<ResponseFormat, { type: 'text' }>,
    readonly vocabulary: GrammarVocabulary,
    readonly grammar: EbnfGrammar,
  ) {}

  /** A fresh constraint at the start of the output, for one row; the caller disposes it. */
  createConstraint(): GrammarConstraint {
    const { key, ebnf, root } = this.grammar;
    return new GrammarConstraint(this.vocabulary, this.vocabulary.matcher(key, ebnf, root));
  }
}

/** Checks a request's response_format and compiles it for the tokenizer's vocabulary: null for none
 * or {"type": "text"}. Throws a 400 (ApiError) naming the field for a malformed value, a schema the
 * engine cannot compile or enforce, or one whose compilation would take more than COMPILE_BUDGET_MS. The
 * first call for a tokenizer builds its vocabulary (about 0.3 s for 32k tokens, in two pieces); a new
 * schema takes a compilation (up to the budget), later ones hit the cache. */
export async function compileResponseFormat(
  value: unknown,
  tokenizer: TextTokenizer,
  opts: VocabularyOptions,
): Promise<ResponseGrammar | null> {
  const format = parseResponseFormat(value);
  if (format === null || format.type === 'text') return null;
  const grammar = await formatGrammar(format);
  const vocabulary = await grammarVocabulary(tokenizer, opts);
  // Compiled now (not when the row starts), unless it costs too much.
  const refused = await serially((): number | null => {
    if (vocabulary.has(grammar.key)) return null;
    const estimate = estimateCompile(grammar.ebnf, vocabulary.stats);
    if (estimate > COMPILE_BUDGET_MS) return estimate;
    vocabulary.compiled(grammar.key, grammar.ebnf, grammar.root);
    return null;
  });
  if (refused) throw await tooCostly(format, grammar, vocabulary, refused);
  return new ResponseGrammar(format, vocabulary, grammar);
}

/** The estimated compilation cost of a schema alone, for a vocabulary; null if it does not convert. */
async function schemaCost(schema: Record<string, unknown>, vocabulary: GrammarVocabulary): Promise<number | null> {
  try {
    const g = await formatGrammar({
      type: 'json_schema',
      json_schema: { name: 'part', schema, strict: null, description: null },
    });
    return estimateCompile(g.ebnf, vocabulary.stats);
  } catch {
    return null;
  }
}

const lengthBounds = new WeakMap<GrammarVocabulary, number>();

/** The largest maxLength a string alone may have on this vocabulary by the estimate (0..255), or Infinity
 * when any may (repetitions past 256 cost no more). */
export async function maxStringLength(vocabulary: GrammarVocabulary): Promise<number> {
  const known = lengthBounds.get(vocabulary);
  if (known !== undefined) return known;
  const g = await formatGrammar({
    type: 'json_schema',
    json_schema: { name: 'part', schema: { type: 'string', maxLength: 2 }, strict: null, description: null },
  });
  const cost = (n: number) => estimateCompile(g.ebnf.replace('{0,2}', `{0,${n}}`), vocabulary.stats);
  if (cost(256) <= COMPILE_BUDGET_MS) {
    lengthBounds.set(vocabulary, Infinity);
    return Infinity;
  }
  let lo = 0; // cost(lo) within the budget (0: nothing is)
  let hi = 256;
  while (hi - lo > 1) {
    const mid = (lo + hi) >>> 1;
    if (cost(mid) <= COMPILE_BUDGET_MS) lo = mid;
    else hi = mid;
  }
  lengthBounds.set(vocabulary, lo);
  return lo;
}

/** The 400 for a grammar that would compile too long, naming the schema's costliest string part if one
 * stands out. */
async function tooCostly(
  format: Exclude<ResponseFormat, { type: 'text' }>,
  grammar: EbnfGrammar,
  vocabulary: GrammarVocabulary,
  estimate: number,
): Promise<ApiError> {
  const V = vocabulary.vocabSize;
  let why = `its grammar is large (${grammar.ebnf.length} characters of EBNF)`;
  if (format.type === 'json_schema') {
    const base = (await schemaCost({ type: 'string' }, vocabulary)) ?? 0;
    let worst: { at: string; keywords: string[]; ms: number } | null = null;
    for (const part of stringParts(format.json_schema.schema).slice(0, PARTS_EXAMINED)) {
      const ms = await schemaCost(part.schema, vocabulary);
      if (ms !== null && (worst === null || ms - base > worst.ms)) worst = { ...part, ms: ms - base };
    }
    if (worst && worst.ms > COMPILE_BUDGET_MS / 4) {
      const limit = await maxStringLength(vocabulary);
      const at = worst.at === '' ? 'the top level' : worst.at;
      const bound = limit === Infinity ? '' : `on this model maxLength and minLength may be at most ${limit}, `;
      why =
        `${worst.keywords.join(', ')} at ${at} costs about ${Math.round(worst.ms)} ms alone. Bounded strings are ` +
        `costly: ${bound}repetitions in a pattern ({m,n}) cost alike, and the costs of all parts add up`;
    }
  }
  const name = format.type === 'json_schema' ? ` '${format.json_schema.name}'` : '';
  return badRequest(
    `Invalid schema for response_format${name}: compiling it for this model's ${V}-token vocabulary would take ` +
      `about ${Math.round(estimate)} ms, more than the ${COMPILE_BUDGET_MS} ms allowed (no other request is ` +
      `served meanwhile): ${why}.`,
    'response_format.json_schema.schema',
    'invalid_json_schema',
  );
}
