// The text each token adds, for the token lists of logprobs (OpenAI's `tokens` and `text_offset`): a
// token's piece is what it adds to the text decoded so far, decoded over a short window of the tokens
// before it (as the incremental detokenizers of TGI and vLLM do), so the pieces of a sequence add up to its
// text (a leading space kept, a character split over byte tokens in its last token).
import type { TextTokenizer } from '../tokenizer/tokenizer.js';

/** Tokens of context decoded before each new one. */
const CONTEXT_TOKENS = 6;

export class TokenPieces {
  private readonly window: number[];

  constructor(
    private readonly tokenizer: TextTokenizer,
    /** Tokens before the first one pushed (their text is not returned). */
    context: number[] = [],
  ) {
    this.window = context.slice(Math.max(0, context.length - CONTEXT_TOKENS));
  }

  /** The text each of `ids` adds; special tokens add none (they are not in the decoded text). */
  push(ids: number[]): string[] {
    return ids.map((id) => this.next(id, []).piece);
  }

  /** The text `id` adds here, and the text each of `alternatives` would have added in its place. */
  next(id: number, alternatives: number[]): { piece: string; alternatives: string[] } {
    if (this.window.length > CONTEXT_TOKENS) this.window.shift();
    const before = this.window.length === 0 ? '' : this.tokenizer.decode(this.window);
    const added = (t: number) => {
      const after = this.tokenizer.decode([...this.window, t]);
      return after.slice(Math.min(before.length, after.length));
    };
    const alts = alternatives.map((t) => this.label(t, added(t)));
    const piece = added(id);
    this.window.push(id);
    return { piece, alternatives: alts };
  }

  /** How a token is shown on its own (its piece, or its literal form when it adds no text, e.g. `<s>`). */
  label(id: number, piece: string): string {
    return piece !== '' ? piece : this.tokenizer.decode([id], { skipSpecial: false });
  }
}
