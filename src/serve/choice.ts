// One choice's text as tokens arrive: decoded after the prompt (as `generate` prints it), cut at the
// first stop string, and handed out in deltas that never end inside a possible stop string or a
// character whose bytes are still coming.
import type { TextTokenizer } from '../tokenizer/tokenizer.js';
import type { FinishReason } from './engine.js';
import type { TokenChoice } from './sampling.js';
import type { PromptScore } from './prompt-scores.js';

/** Prompt tokens decoded before the first new one, as its context (a leading space, a split character). */
const CONTEXT_TOKENS = 6;

export class ChoiceText {
  readonly ids: number[] = [];
  /** Tokens with their log-probabilities (when asked for), in order. */
  readonly scored: TokenChoice[] = [];
  /** The prompt's own log-probabilities (echo with logprobs), once the prefill has run. */
  promptScores: PromptScore[] | null = null;
  text = '';
  finishReason: FinishReason | null = null;
  error: Error | null = null;
  private sent = 0;
  private scoredSent = 0;
  /** The continuation's text so far, before any stop string cuts it. */
  private full = '';
  private cut = false;
  /** Ids decoded incrementally (the prompt's tail, then the text tokens): each new token's text is
   * decode(window[prefix:]) minus decode(window[prefix:read]), as TGI's and vLLM's incremental
   * detokenizers do, so that a token costs a few tokens' decoding, not the whole sequence's. */
  private readonly window: number[];
  private prefix = 0;
  private read: number;
  private readonly holdBack: number;
  private readonly longestStop: number;

  constructor(
    private readonly tokenizer: TextTokenizer,
    prompt: number[],
    private readonly stops: string[],
    /** Ids that are not text (EOS, stop_token_ids). */
    private readonly stopIds: number[],
    /** Stop strings match only once this many tokens were generated (vLLM's min_tokens). */
    private readonly minTokens = 0,
  ) {
    this.window = prompt.slice(Math.max(0, prompt.length - CONTEXT_TOKENS));
    this.read = this.window.length;
    this.longestStop = Math.max(0, ...stops.map((s) => s.length));
    this.holdBack = Math.max(0, this.longestStop - 1);
  }

  /** Adds a token; true when a stop string ended the text. Stop tokens (EOS) are not text. */
  push(choice: TokenChoice): boolean {
    this.ids.push(choice.id);
    if (choice.logprob !== undefined) this.scored.push(choice);
    if (this.stopIds.includes(choice.id) || this.cut) return this.cut;
    this.window.push(choice.id);
    // Wait while the text ends inside a character whose bytes are still coming (U+FFFD).
    return this.decodeNew(false);
  }

  /** The sequence ended: the text held back for an incomplete character is added as it decodes. */
  finish(reason: FinishReason, error: Error | null = null): void {
    if (!this.cut) this.decodeNew(true);
    this.finishReason = reason;
    this.error = error;
  }

  /** Appends the window's new text (unless it ends in an incomplete character and `final` is false),
   * then cuts at the first stop string; true when one was found. */
  private decodeNew(final: boolean): boolean {
    if (this.read >= this.window.length) return false;
    const before = this.tokenizer.decode(this.window.slice(this.prefix, this.read));
    const after = this.tokenizer.decode(this.window.slice(this.prefix));
    if (after.length <= before.length || (!final && after.endsWith('\uFFFD'))) return false;
    const from = Math.max(0, this.full.length - this.longestStop + 1);
    this.full += after.slice(before.length);
    this.prefix = this.read;
    this.read = this.window.length;
    this.window.splice(0, this.prefix); // keep the window short
    this.read -= this.prefix;
    this.prefix = 0;
    let at = -1;
    // Before min_tokens, stop strings do not end the text (and text seen then is not searched again).
    if (this.ids.length >= this.minTokens)
      for (const s of this.stops) {
        const i = this.full.indexOf(s, from);
        if (i >= 0 && (at < 0 || i < at)) at = i;
      }
    this.cut = at >= 0;
    this.text = this.cut ? this.full.slice(0, at) : this.full;
    return this.cut;
  }

  /** Text not sent yet; before the end, minus a tail that may still become a stop string or a
   * character (U+FFFD while a multi-byte character is incomplete). */
  takeDelta(): string {
    let end = this.text.length;
    if (this.finishReason === null) {
      end -= this.holdBack;
      while (end > this.sent && this.text[end - 1] === '\uFFFD') end--;
      const code = this.text.charCodeAt(end - 1);
      if (end > this.sent && code >= 0xd800 && code <= 0xdbff) end--;
    }
    if (end <= this.sent) return '';
    const delta = this.text.slice(this.sent, end);
    this.sent = end;
    return delta;
  }

  /** Scored tokens not handed out yet. */
  takeScored(): TokenChoice[] {
    const out = this.scored.slice(this.scoredSent);
    this.scoredSent = this.scored.length;
    return out;
  }
}
