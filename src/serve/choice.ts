// One choice's text as tokens arrive: decoded after the prompt (as `generate` prints it), cut at the
// first stop string, and handed out in deltas that never end inside a possible stop string or a
// character whose bytes are still coming.
import type { TextTokenizer } from '../tokenizer/tokenizer.js';
import type { FinishReason } from './engine.js';
import type { TokenChoice } from './sampling.js';

export class ChoiceText {
  readonly ids: number[] = [];
  /** Tokens with their log-probabilities (when asked for), in order. */
  readonly scored: TokenChoice[] = [];
  text = '';
  finishReason: FinishReason | null = null;
  error: Error | null = null;
  private sent = 0;
  private scoredSent = 0;
  private readonly promptText: string;
  private readonly holdBack: number;

  constructor(
    private readonly tokenizer: TextTokenizer,
    private readonly prompt: number[],
    private readonly stops: string[],
    private readonly stopIds: number[],
  ) {
    this.promptText = tokenizer.decode(prompt);
    this.holdBack = Math.max(0, ...stops.map((s) => s.length - 1));
  }

  /** Adds a token; true when a stop string ended the text. Stop tokens (EOS) are not text. */
  push(choice: TokenChoice): boolean {
    this.ids.push(choice.id);
    if (choice.logprob !== undefined) this.scored.push(choice);
    if (this.stopIds.includes(choice.id)) return false;
    const kept = this.ids.filter((id) => !this.stopIds.includes(id));
    // As TextTokenizer.decodeContinuation: decoding the continuation alone can lose a leading space.
    const all = this.tokenizer.decode([...this.prompt, ...kept]);
    const full = all.startsWith(this.promptText) ? all.slice(this.promptText.length) : this.tokenizer.decode(kept);
    let cut = -1;
    for (const s of this.stops) {
      const at = full.indexOf(s);
      if (at >= 0 && (cut < 0 || at < cut)) cut = at;
    }
    this.text = cut >= 0 ? full.slice(0, cut) : full;
    return cut >= 0;
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
