// Where a model's frozen weights live between uses. By default they are all resident (no residency
// object). A sharded base (sharded-base.ts) keeps each rank's share only, and puts a unit's whole weights
// in place for the time a pass uses them: CausalLM asks for a unit around each use.

/** A group of weights put in place together: the token embeddings, one decoder layer, or the head (the final
 * norm and the LM head; with tied embeddings the head needs the embeddings too). */
export type WeightUnit = 'embed' | 'head' | number;

export interface WeightResidency {
  /** Runs fn with the unit's weights in place in the model's ModelWeights; nested calls for the same unit
   * share one placement. Every rank of a sharded base must make the same calls in the same order. */
  use<T>(unit: WeightUnit, fn: () => T): T;
  /** The units the coming pass will use, in order, so that a residency can fetch each next one ahead. */
  expect(units: WeightUnit[]): void;
  /** Bytes this process holds of the frozen weights between uses. */
  readonly residentBytes: number;
  dispose(): void;
}

/** The unit a weight belongs to, by its Hugging Face name. */
export function unitOf(name: string): WeightUnit {
  const layer = /^model\.layers\.(\d+)\./.exec(name);
  if (layer) return Number(layer[1]);
  return name === 'model.embed_tokens.weight' ? 'embed' : 'head';
}
