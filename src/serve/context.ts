// What every route needs: the engine, the models it answers to, the tokenizer and the metrics.
import type { TextTokenizer } from '../tokenizer/tokenizer.js';
import type { CausalLM } from '../models/causal-lm.js';
import type { Engine } from './engine.js';
import type { ModelRegistry } from './registry.js';
import type { ServerMetrics } from './metrics.js';

export interface ServeContext {
  model: CausalLM;
  tokenizer: TextTokenizer;
  engine: Engine;
  registry: ModelRegistry;
  metrics: ServerMetrics;
  /** Token ids that end a sequence (the model's EOS ids). */
  stopIds: number[];
  /** A connection's idle timeout (restored after a non-streaming answer, which suspends it). */
  idleTimeoutMs: number;
}
