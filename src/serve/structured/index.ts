// Structured output for `mixlora serve` (response_format): JSON mode and JSON Schema, enforced token by
// token with XGrammar's WebAssembly build. See grammar.ts for the entry point, constraint.ts for the
// per-row use.
export { parseResponseFormat, type ResponseFormat, type JsonSchemaFormat } from './response-format.js';
export { compileResponseFormat, formatGrammar, ResponseGrammar, type EbnfGrammar } from './grammar.js';
export { TokenConstraint, maskLogits, isAllowed } from './constraint.js';
export {
  grammarVocabulary,
  releaseGrammarVocabularies,
  tokenBytes,
  GrammarVocabulary,
  GRAMMAR_CACHE_SIZE,
  type VocabularyOptions,
} from './vocabulary.js';
export { liveObjects, GrammarEngineError } from './wasm.js';
