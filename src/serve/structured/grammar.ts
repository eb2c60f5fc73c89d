// From a checked response_format to a grammar over a model's vocabulary. XGrammar turns the JSON
// Schema into an EBNF grammar in a separate "checker" instance (a schema it cannot handle aborts that
// instance, which is replaced, and becomes a 400 naming response_format.json_schema.schema); the
// grammar is then compiled for the vocabulary in the main instance. Output is compact JSON on one line
// (", " and ": " between items, no other whitespace, so a model cannot wander in whitespace), with one
// optional space before it (SentencePiece models tend to start an answer with "▁{"). For json_schema
// XGrammar's strict mode is on whatever `strict` says: properties the schema does not name are not
// generated (the output still validates against the schema).
import type { TextTokenizer } from '../../tokenizer/tokenizer.js';
import { badRequest } from '../errors.js';
import { TokenConstraint } from './constraint.js';
import { parseResponseFormat, type ResponseFormat } from './response-format.js';
import { unsupportedSchemaPart } from './schema-check.js';
import { grammarVocabulary, type GrammarVocabulary, type VocabularyOptions } from './vocabulary.js';
import { checkerInstance, GrammarEngineError } from './wasm.js';

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
  const checker = await checkerInstance();
  let grammar: EbnfGrammar;
  try {
    grammar = checker.call((b) => {
      const text = JSON.stringify(schema);
      const ebnf = b._JSONSchemaToEBNF(text, false, undefined, undefined, strict, undefined, b.JSONFormat.kJSON);
      // XGrammar warns where it gives up on part of a schema (the grammar would not enforce it).
      const warning = checker.warnings()[0];
      if (warning !== undefined) throw refuse(warning);
      let root = ROOT;
      while (new RegExp(`^${root} ::=`, 'm').test(ebnf)) root += '_';
      const full = `${ebnf}\n${root} ::= " "? root\n`;
      // Parse it here: what reaches the main instance is known to parse.
      b.Grammar.FromEBNF(full, root).delete();
      return { key, ebnf: full, root };
    });
  } catch (e) {
    throw e instanceof GrammarEngineError ? refuse(e.message) : e;
  }
  ebnfCache.set(key, grammar);
  if (ebnfCache.size > EBNF_CACHE_SIZE) ebnfCache.delete(ebnfCache.keys().next().value!);
  return grammar;
}

/** A response format compiled for one vocabulary: makes a TokenConstraint per row. Holds no WebAssembly
 * object itself (nothing to free): the compiled grammar sits in the vocabulary's LRU and is compiled
 * again if it was evicted meanwhile. */
export class ResponseGrammar {
  constructor(
    readonly format: Exclude<ResponseFormat, { type: 'text' }>,
    readonly vocabulary: GrammarVocabulary,
    readonly grammar: EbnfGrammar,
  ) {}

  /** A fresh constraint at the start of the output, for one row; the caller disposes it. */
  createConstraint(): TokenConstraint {
    const { key, ebnf, root } = this.grammar;
    return new TokenConstraint(this.vocabulary, this.vocabulary.matcher(key, ebnf, root));
  }
}

/** Checks a request's response_format and compiles it for the tokenizer's vocabulary: null for none
 * or {"type": "text"}. Throws a 400 (ApiError) naming the field for a malformed value or a schema the
 * engine cannot compile. The first call for a tokenizer scans its vocabulary (tens of ms for 32k
 * tokens); a new schema takes a compilation (about 0.1 s for 32k tokens), later ones hit the cache. */
export async function compileResponseFormat(
  value: unknown,
  tokenizer: TextTokenizer,
  opts: VocabularyOptions,
): Promise<ResponseGrammar | null> {
  const format = parseResponseFormat(value);
  if (format === null || format.type === 'text') return null;
  const grammar = await formatGrammar(format);
  const vocabulary = await grammarVocabulary(tokenizer, opts);
  vocabulary.compiled(grammar.key, grammar.ebnf, grammar.root); // now, not when the row starts
  return new ResponseGrammar(format, vocabulary, grammar);
}
