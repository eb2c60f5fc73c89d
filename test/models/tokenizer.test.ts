// Token ids for known strings equal those of the original tokenizers (test/fixtures/llama2-tokenizer/
// ids.json: the sentencepiece library for LLaMA-2's tokenizer.model, llama2.c's encode for tok512.bin).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { ROOT, STORIES_TOK, tempDir } from '../helpers/fixtures.js';
import { TextTokenizer } from '../../src/tokenizer/tokenizer.js';

const fixtures = JSON.parse(
  fs.readFileSync(path.join(ROOT, 'test/fixtures/llama2-tokenizer/ids.json'), 'utf8'),
) as Record<string, { text: string; ids: number[] }[]>;

test("LLaMA-2 tokenizer.model: ids equal the sentencepiece library's; decode round-trips", () => {
  const tok = TextTokenizer.fromSentencePiece(path.join(ROOT, 'test/fixtures/llama2-tokenizer/tokenizer.model'));
  for (const { text, ids } of fixtures.llama2!) {
    assert.deepEqual(tok.encode(text), ids, JSON.stringify(text));
    assert.equal(tok.decode(ids), text);
  }
  assert.equal(tok.bosId, 1);
  assert.equal(tok.eosId, 2);
  // Every piece is in the vocabulary, those named like Object's properties too ('constructor' and
  // 'toString' were lost once, to a vocabulary built on a plain object).
  assert.equal(tok.vocabSize, 32000);
  assert.equal(tok.tokenToId('constructor'), 27821);
  assert.equal(tok.tokenToId('toString'), 7711);
  assert.equal(tok.tokenToId('▁constructor'), 5823);
});

test("llama2.c tok512.bin: ids equal llama2.c's encode; decode round-trips", () => {
  const tok = TextTokenizer.fromLlama2c(STORIES_TOK, 512);
  for (const { text, ids } of fixtures.tok512!) {
    assert.deepEqual(tok.encode(text), ids, JSON.stringify(text));
    assert.equal(tok.decode(ids), text);
  }
});

test('tokenizer_config.json decides BOS/EOS; chat_template renders with jinja', () => {
  const dir = tempDir();
  const base = TextTokenizer.fromLlama2c(STORIES_TOK, 512);
  fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(base.tokenizerJson));
  fs.writeFileSync(
    path.join(dir, 'tokenizer_config.json'),
    JSON.stringify({
      add_bos_token: false,
      add_eos_token: true,
      bos_token: '<s>',
      eos_token: { content: '</s>' },
      chat_template:
        "{% for m in messages %}{{ bos_token }}[{{ m['role'] }}] {{ m['content'] }}{{ eos_token }}{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}",
    }),
  );
  const tok = TextTokenizer.fromDir(dir);
  const ids = tok.encode('Once upon a time');
  assert.equal(ids[0], base.encode('Once upon a time')[1], 'no BOS');
  assert.equal(ids[ids.length - 1], 2, 'EOS appended');
  assert.equal(
    tok.applyChatTemplate([{ role: 'user', content: 'hi' }], { addGenerationPrompt: true }),
    '<s>[user] hi</s>[assistant]',
  );
});
