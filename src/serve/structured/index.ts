// Structured output for `mixlora serve` (response_format): JSON mode and JSON Schema, enforced token by
// token with XGrammar's WebAssembly build. See grammar.ts for the entry point, constraint.ts for the
// per-row use, cost.ts for what a compilation may cost, workarounds.ts and integer-ranges.ts for the
// engine's bugs worked around.
export { parseResponseFormat, type ResponseFormat, type JsonSchemaFormat } from './response-format.js';
export {
  compileResponseFormat,
  formatGrammar,
  maxStringLength,
  ResponseGrammar,
  COMPILE_BUDGET_MS,
  type EbnfGrammar,
} from './grammar.js';
export { GrammarConstraint, maskLogits, isAllowed } from './constraint.js';
export { estimateCompile, grammarFeatures, VocabularyStats, type GrammarFeatures } from './cost.js';
export {
  grammarVocabulary,
  releaseGrammarVocabularies,
  tokenBytes,
  GrammarVocabulary,
  GRAMMAR_CACHE_SIZE,
  type VocabularyOptions,
} from './vocabulary.js';
export { SCHEMA_MAX_BYTES, SCHEMA_MAX_DEPTH } from './schema-check.js';
export { liveObjects, GrammarEngineError } from './wasm.js';
