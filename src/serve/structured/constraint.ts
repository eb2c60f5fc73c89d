// One row's grammar state while it decodes: which token ids may come next (a bitmask over the
// vocabulary, bit i of word i >> 5 = id i) and the token actually taken. Wraps an XGrammar matcher,
// which lives in WebAssembly memory: dispose() frees it. It is the engine's TokenConstraint
// (sampling.ts): mask() applies the bitmask to the row's logits.
import type { TokenConstraint } from '../sampling.js';
import type { GrammarVocabulary } from './vocabulary.js';
import { liveObjects, type XGrammarMatcher } from './wasm.js';

export class GrammarConstraint implements TokenConstraint {
  readonly vocabSize: number;
  private readonly bits: Uint32Array;
  /** bits holds the allowed set of the current state. */
  private fresh = false;
  /** A stop id was accepted. */
  private terminated = false;
  private matcher: XGrammarMatcher | null;

  constructor(
    private readonly vocab: GrammarVocabulary,
    matcher: XGrammarMatcher,
  ) {
    this.matcher = matcher;
    this.vocabSize = vocab.vocabSize;
    this.bits = new Uint32Array(Math.ceil(this.vocabSize / 32));
  }

  /** Sets every logit the grammar does not allow next to -Infinity (ids past the vocabulary too). */
  mask(logits: Float32Array): void {
    maskLogits(logits, this.allowedMask());
  }

  /** The ids allowed next, as a bitmask over [0, vocabSize). Once the text is a complete value that cannot
   * go on, only the stop ids are allowed; after a stop id was accepted, still only those. The array is
   * reused: valid until the next accept(). */
  allowedMask(): Uint32Array {
    const m = this.live();
    if (this.fresh) return this.bits;
    if (this.terminated) {
      this.bits.fill(0);
      for (const id of this.vocab.stopIds) this.bits[id >>> 5]! |= 1 << (id & 31);
    } else {
      this.vocab.instance.call((b) => {
        const v = m.GetNextTokenBitmask(this.vocabSize);
        try {
          const view = b.vecIntToView(v);
          this.bits.set(new Uint32Array(view.buffer, view.byteOffset, Math.min(view.length, this.bits.length)));
        } finally {
          v.delete();
        }
      });
    }
    this.fresh = true;
    return this.bits;
  }

  /** Advances past token `id`, which must be allowed (pick from logits masked with allowedMask()). */
  accept(id: number): void {
    const m = this.live();
    if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize)
      throw new Error(`internal error: token id ${id} outside the vocabulary (0..${this.vocabSize - 1})`);
    if (this.terminated) throw new Error(`internal error: token ${id} after the structured output ended`);
    const accepted = this.vocab.instance.call(() => {
      if (!m.AcceptToken(id, false)) return false;
      this.terminated = m.IsTerminated();
      return true;
    });
    if (!accepted) throw new Error(`internal error: token ${id} is not allowed by the response format's grammar`);
    this.fresh = false;
  }

  /** Whether a stop id was accepted: the output is complete and the row ends. */
  get finished(): boolean {
    return this.terminated;
  }

  get disposed(): boolean {
    return this.matcher === null;
  }

  /** Frees the matcher (idempotent). */
  dispose(): void {
    if (!this.matcher) return;
    if (!this.vocab.instance.broken) this.matcher.delete();
    this.matcher = null;
    liveObjects.matchers--;
  }

  private live(): XGrammarMatcher {
    if (!this.matcher) throw new Error('internal error: the token constraint was disposed');
    return this.matcher;
  }
}

/** Whether `mask` allows token `id`. */
export function isAllowed(mask: Uint32Array, id: number): boolean {
  return id >= 0 && id >>> 5 < mask.length && ((mask[id >>> 5]! >>> (id & 31)) & 1) === 1;
}

/** Sets logits[i] = -Infinity for every id that `mask` does not allow (ids past the mask included). */
export function maskLogits(logits: Float32Array, mask: Uint32Array): void {
  const n = logits.length;
  const words = Math.min(mask.length, Math.ceil(n / 32));
  for (let w = 0; w < words; w++) {
    const word = mask[w]!;
    if (word === 0xffffffff) continue;
    const base = w * 32;
    if (word === 0) {
      logits.fill(-Infinity, base, Math.min(base + 32, n));
      continue;
    }
    const end = Math.min(32, n - base);
    for (let j = 0; j < end; j++) if (((word >>> j) & 1) === 0) logits[base + j] = -Infinity;
  }
  if (words * 32 < n) logits.fill(-Infinity, words * 32);
}
