// The word split that speeds up SentencePiece-style BPE (src/tokenizer/word-split.ts) never changes a token:
// with it and without it, @huggingface/tokenizers gives the same ids for the bundled training texts and for
// texts made to catch a split in the wrong place (runs of spaces, leading and trailing spaces, newlines,
// characters only byte fallback covers, special tokens inside the text). It is refused where a piece spans
// two words, or where the tokenizer has a pre-tokenizer of its own.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { Tokenizer } from '@huggingface/tokenizers';
import { ROOT, STORIES_TOK } from '../helpers/fixtures.js';
import { TextTokenizer } from '../../src/tokenizer/tokenizer.js';
import { withWordSplit } from '../../src/tokenizer/word-split.js';

const TRICKY = [
  'Once upon a time',
  '  two leading spaces, two  inner  spaces and two trailing  ',
  ' ',
  '    ',
  'a',
  'line one\nline two\n\n  indented\tand tabbed',
  'émigré naïve façade — “quotes” 東京 🦙🦙 done',
  '<s>special</s> tokens <unk> inside the text',
  'no_space_at_all_in_this_long_run_of_characters_that_bpe_merges_over',
  'trailing newline\n',
];

function bundledTexts(n: number): string[] {
  const file = path.join(ROOT, 'assets', 'data', 'commonsense', 'arc-e.train.jsonl.gz');
  const lines = zlib.gunzipSync(fs.readFileSync(file)).toString('utf8').trim().split('\n');
  return lines.slice(0, n).map((l) => {
    const r = JSON.parse(l) as { instruction: string; output: string };
    return `${r.instruction}\n${r.output}`;
  });
}

for (const [name, load] of [
  ['llama2.c tok512.bin', () => TextTokenizer.fromLlama2c(STORIES_TOK, 512)],
  [
    "LLaMA-2's tokenizer.model",
    () => TextTokenizer.fromSentencePiece(path.join(ROOT, 'test/fixtures/llama2-tokenizer/tokenizer.model')),
  ],
] as const) {
  test(`${name}: the word split applies and gives the ids of the unsplit encoder`, () => {
    const ours = load();
    assert.notEqual(withWordSplit(ours.tokenizerJson), ours.tokenizerJson, 'the split applies');
    const unsplit = new Tokenizer(ours.tokenizerJson, ours.config);
    for (const text of [...TRICKY, ...bundledTexts(300)])
      assert.deepEqual(
        ours.encode(text, { special: false }),
        unsplit.encode(text, { add_special_tokens: false }).ids,
        JSON.stringify(text),
      );
  });
}

test('no split where a piece spans two words, or where the tokenizer has its own pre-tokenizer', () => {
  const json = TextTokenizer.fromLlama2c(STORIES_TOK, 512).tokenizerJson as Record<string, unknown>;
  const model = json.model as { vocab: Record<string, number>; merges: [string, string][] };
  const spanning = { ...json, model: { ...model, vocab: { ...model.vocab, 'a▁b': 512 } } };
  assert.equal(withWordSplit(spanning), spanning);
  const spanningMerge = { ...json, model: { ...model, merges: [...model.merges, ['e', '▁t']] } };
  assert.equal(withWordSplit(spanningMerge), spanningMerge);
  const own = { ...json, pre_tokenizer: { type: 'Metaspace', replacement: '▁', prepend_scheme: 'first' } };
  assert.equal(withWordSplit(own), own);
  // What mixlora writes out (save.ts) is the tokenizer.json as read, without the split.
  assert.equal(json.pre_tokenizer, null);
});
