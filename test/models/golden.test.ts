// The real stories260K checkpoint continues "Once upon a time" exactly as llama2.c does, through the
// llama2.c loader and through the converted Hugging Face folder; batching changes nothing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { STORIES_BIN, STORIES_TOK, tempDir } from '../helpers/fixtures.js';
import * as T from '../../src/tensor/index.js';
import { loadModel } from '../../src/models/load.js';
import { convertLlama2c } from '../../src/models/convert.js';
import { generate } from '../../src/generate/generate.js';

const GOLDEN = ', there was a little girl named Lily. She loved to play outside in the park.';
const greedy = { temperature: 0, topK: null, topP: null, repetitionPenalty: null, stopIds: [2] };

function continuation(modelPath: string, tokenizer?: string): string {
  const { model, tokenizer: tok } = loadModel(modelPath, { tokenizer });
  const prompt = tok.encode('Once upon a time');
  const [out] = generate(model, [prompt], { ...greedy, maxNewTokens: 32 });
  model.dispose();
  return tok.decodeContinuation(prompt, out!);
}

test('golden: stories260K through the llama2.c loader', () => {
  const before = T.liveTensors();
  assert.equal(continuation(STORIES_BIN, STORIES_TOK).slice(0, GOLDEN.length), GOLDEN);
  assert.equal(T.liveTensors(), before, 'generation left tensors behind');
});

test('golden: stories260K converted to a Hugging Face folder', () => {
  const out = path.join(tempDir(), 'hf');
  convertLlama2c(STORIES_BIN, STORIES_TOK, out);
  assert.equal(continuation(out).slice(0, GOLDEN.length), GOLDEN);
});

test('golden: greedy decoding from BOS gives the known llama2.c output', () => {
  const { model, tokenizer } = loadModel(STORIES_BIN, { tokenizer: STORIES_TOK });
  const [out] = generate(model, [[1]], { ...greedy, maxNewTokens: 50 });
  const known =
    'Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball.';
  assert.equal(tokenizer.decode(out!).slice(0, known.length), known);
  model.dispose();
});

test('a batch of prompts of different lengths gives what each prompt gives alone', () => {
  const { model, tokenizer } = loadModel(STORIES_BIN, { tokenizer: STORIES_TOK });
  const prompts = ['Once upon a time', 'The cat', 'Lily went to the park and', 'Tom'].map((s) => tokenizer.encode(s));
  const batch = generate(model, prompts, { ...greedy, maxNewTokens: 24 });
  const alone = prompts.map((p) => generate(model, [p], { ...greedy, maxNewTokens: 24 })[0]);
  assert.deepEqual(batch, alone);
  model.dispose();
});

test('sampling with a seed repeats; different seeds differ; stops at EOS or max tokens', () => {
  const { model, tokenizer } = loadModel(STORIES_BIN, { tokenizer: STORIES_TOK });
  const prompt = tokenizer.encode('Once upon a time');
  const o = { temperature: 1, topK: 50, topP: 0.95, repetitionPenalty: 1.1, stopIds: [2], maxNewTokens: 60 };
  const a = generate(model, [prompt], { ...o, seed: 1 })[0]!;
  assert.deepEqual(generate(model, [prompt], { ...o, seed: 1 })[0], a);
  const others = [2, 3, 4].map((seed) => generate(model, [prompt], { ...o, seed })[0]!);
  assert.ok(
    others.some((b) => JSON.stringify(b) !== JSON.stringify(a)),
    'three other seeds all gave the same text',
  );
  for (const seq of [a, ...others]) {
    assert.ok(seq.length <= 60);
    if (seq.length < 60) assert.equal(seq[seq.length - 1], 2, 'stopped early without EOS');
    assert.equal(seq.indexOf(2), seq.includes(2) ? seq.length - 1 : -1, 'continued past EOS');
  }
  model.dispose();
});
