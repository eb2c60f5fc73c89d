// A choice's text as tokens arrive (src/serve/choice.ts), decoded incrementally over a short window: the
// deltas handed out, joined, equal `generate`'s decoding of the whole continuation (decodeContinuation)
// for text with multi-byte characters split across byte tokens and for 600 random ids; a stop string
// cuts the text where it first occurs, also when it spans two tokens.
import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import { TextTokenizer } from '../../src/tokenizer/tokenizer.js';
import { ChoiceText } from '../../src/serve/choice.js';
import { ROOT } from '../helpers/fixtures.js';

const tokenizer = TextTokenizer.fromSentencePiece(
  path.join(ROOT, 'test', 'fixtures', 'llama2-tokenizer', 'tokenizer.model'),
);
const EOS = 2;

/** Streams `ids` through a choice as the server does; returns the joined deltas and the choice. */
function stream(prompt: number[], ids: number[], stops: string[] = []): { joined: string; choice: ChoiceText } {
  const choice = new ChoiceText(tokenizer, prompt, stops, [EOS]);
  let joined = '';
  for (const id of ids) {
    const stop = choice.push({ id });
    joined += choice.takeDelta();
    if (stop) break;
  }
  choice.finish('length');
  joined += choice.takeDelta();
  return { joined, choice };
}

test('incremental decoding equals decoding the whole continuation', () => {
  const prompt = tokenizer.encode('Once upon a time');
  const texts = ['there was a dog named 小狗 🐶 who liked naïve café songs.', ' 日本語のテキスト and ASCII again 😀😀'];
  for (const text of texts) {
    const ids = tokenizer.encode(text).slice(1); // without BOS
    const { joined, choice } = stream(prompt, ids);
    assert.equal(joined, tokenizer.decodeContinuation(prompt, ids), text);
    assert.equal(choice.text, joined);
  }
  // Random ids, byte tokens (3-258) among them: invalid bytes decode to U+FFFD, as in the full decoding.
  let seed = 7;
  const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed);
  const ids = Array.from({ length: 600 }, (_, i) => (i % 5 === 0 ? 3 + (random() % 256) : 3 + (random() % 31990)));
  const { joined } = stream(prompt, ids);
  assert.equal(joined, tokenizer.decodeContinuation(prompt, ids), 'random ids');
});

test('a stop string cuts the text at its first occurrence, across tokens too', () => {
  const prompt = tokenizer.encode('Tom said');
  const ids = tokenizer.encode(' hello there, hello again and goodbye').slice(1);
  const full = tokenizer.decodeContinuation(prompt, ids);
  for (const stop of ['hello', 'o th', 'again and', 'missing']) {
    const { joined, choice } = stream(prompt, ids, [stop]);
    const at = full.indexOf(stop);
    assert.equal(joined, at >= 0 ? full.slice(0, at) : full, stop);
    assert.equal(choice.text, joined);
  }
});
