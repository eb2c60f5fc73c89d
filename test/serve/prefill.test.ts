// Batched prefill: sequences that arrive together (or over a few event-loop turns) are prefilled in one
// forward, left-padded to the longest prompt, with rows of the base model and of LoRA, DoRA, MixLoRA and
// MixDoRA adapters; each row's greedy tokens equal `generate` on its prompt alone (batch 1), and the KV
// pool holds each prompt where the decode steps read it (the continuation after the prefilled token
// depends on it).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadModel } from '../../src/models/load.js';
import { loadAdapter } from '../../src/adapters/io.js';
import type { Adapter } from '../../src/adapters/adapter.js';
import { generate } from '../../src/generate/generate.js';
import { Engine, type SequenceSpec } from '../../src/serve/engine.js';
import { blockBytes, blocksFor } from '../../src/serve/block-pool.js';
import { ServerMetrics } from '../../src/serve/metrics.js';
import * as T from '../../src/tensor/index.js';
import { STORIES_BIN, STORIES_TOK, tempDir } from '../helpers/fixtures.js';
import { writeAdapters } from './serve-fixtures.js';

const PROMPTS = ['Once upon a time', 'The little dog', 'Tom and Sue went to the park with', 'A big red ball'];
const NEW_TOKENS = 12;

function serve(engine: Engine, prompt: number[], adapter: Adapter | null): Promise<number[]> {
  return new Promise((resolve, reject) => {
    const tokens: number[] = [];
    const spec: SequenceSpec = {
      prompt,
      maxTokens: NEW_TOKENS,
      modelName: adapter?.name ?? 'base',
      adapter,
      sampling: { temperature: 0, topP: null, topK: null, seed: null, logprobs: null },
      sink: {
        onToken: (c) => (tokens.push(c.id), false),
        onFinish: (_reason, error) => (error ? reject(error) : resolve(tokens)),
      },
    };
    engine.submit([spec]);
  });
}

test('sequences sent together are prefilled in one forward and each equals generate alone', async () => {
  const { model, tokenizer } = loadModel(STORIES_BIN, { tokenizer: STORIES_TOK });
  const dirs = writeAdapters(tempDir('mixlora-prefill-'), model);
  const adapters: (Adapter | null)[] = [null];
  for (const dir of Object.values(dirs)) adapters.push(await loadAdapter(dir, model));
  const cases = PROMPTS.flatMap((p, i) =>
    adapters.map((_a, j) => ({ ids: tokenizer.encode(p), adapter: adapters[(i + j) % adapters.length]! })),
  );
  const greedy = { maxNewTokens: NEW_TOKENS, temperature: 0, topK: null, topP: null, repetitionPenalty: null };
  const expected = cases.map(({ ids, adapter }) => generate(model, [ids], { ...greedy, stopIds: [], adapter })[0]!);
  const live = T.liveTensors();
  // generate() of every case at once, one adapter per prompt (as PEFT's adapter_names): each row as alone.
  const adapterOf = cases.map((c) => c.adapter);
  const together = generate(
    model,
    cases.map((c) => c.ids),
    { ...greedy, stopIds: [], adapter: adapterOf },
  );
  assert.deepEqual(together, expected, 'generate() with one adapter per prompt');
  assert.equal(T.liveTensors(), live, 'generate() leaves no tensor behind');
  const engine = new Engine(model, { maxBatch: cases.length, maxQueue: 0, stopIds: [], metrics: new ServerMetrics() });
  const got = await Promise.all(cases.map(({ ids, adapter }) => serve(engine, ids, adapter)));
  assert.equal(engine.peakPrefill, cases.length, 'all sequences prefilled in one forward');
  cases.forEach(({ adapter }, i) => assert.deepEqual(got[i], expected[i], `${adapter?.name ?? 'base'}: ${i}`));
  await engine.shutdown(1000);
  assert.equal(T.liveTensors(), live, 'the engine leaves no tensor behind');
  for (const a of adapters) a?.dispose();
  model.dispose();
});

test('generate(): a prompt whose adapter fails throws, leaving nothing behind; adapters must match prompts', async () => {
  const { model, tokenizer } = loadModel(STORIES_BIN, { tokenizer: STORIES_TOK });
  const dirs = writeAdapters(tempDir('mixlora-generate-fault-'), model);
  const broken = await loadAdapter(dirs.lora!, model);
  broken.dispose(); // its tensors are gone: any forward through it throws
  const ids = tokenizer.encode(PROMPTS[0]!);
  const o = { maxNewTokens: 4, temperature: 0, topK: null, topP: null, repetitionPenalty: null, stopIds: [] };
  const live = T.liveTensors();
  assert.throws(() => generate(model, [ids, ids], { ...o, adapter: [null, broken] }));
  assert.equal(T.liveTensors(), live, 'the KV pool and the stacks were freed');
  assert.throws(() => generate(model, [ids, ids], { ...o, adapter: [null] }), /1 adapters given for 2 prompts/);
  model.dispose();
});

test('generate() within a KV cache too small for every row at once gives the same tokens; too small for one is refused', () => {
  const { model, tokenizer } = loadModel(STORIES_BIN, { tokenizer: STORIES_TOK });
  const prompts = PROMPTS.map((p) => tokenizer.encode(p));
  const o = { maxNewTokens: 40, temperature: 0, topK: null, topP: null, repetitionPenalty: null, stopIds: [] };
  const roomy = generate(model, prompts, o);
  const longest = Math.max(...prompts.map((p) => p.length)) + o.maxNewTokens;
  // Blocks for the longest row and one more: the rows take turns, giving blocks up and computing again.
  const mib = ((blocksFor(longest + 1) + 1) * blockBytes(model.config, model.dtype)) / 2 ** 20;
  const live = T.liveTensors();
  assert.deepEqual(generate(model, prompts, { ...o, kvCacheMib: mib }), roomy);
  assert.equal(T.liveTensors(), live);
  assert.throws(() => generate(model, prompts, { ...o, kvCacheMib: mib / 4 }), /kvCacheMib .* is too small/);
  model.dispose();
});

test('sequences that reach the queue over a few event-loop turns are still prefilled in one forward', async () => {
  const { model, tokenizer } = loadModel(STORIES_BIN, { tokenizer: STORIES_TOK });
  const engine = new Engine(model, { maxBatch: 4, maxQueue: 4, stopIds: [], metrics: new ServerMetrics() });
  const replies: Promise<number[]>[] = [];
  for (const prompt of PROMPTS.slice(0, 3)) {
    replies.push(serve(engine, tokenizer.encode(prompt), null));
    await new Promise((resolve) => setImmediate(resolve)); // the next one a turn later, as over HTTP
  }
  await Promise.all(replies);
  assert.equal(engine.peakPrefill, 3, 'the three arrivals gathered into one prefill');
  await engine.shutdown(1000);
  model.dispose();
});

test('a sequence that fails in a batched prefill fails alone; the others that arrived with it are answered', async () => {
  const { model, tokenizer } = loadModel(STORIES_BIN, { tokenizer: STORIES_TOK });
  const dirs = writeAdapters(tempDir('mixlora-prefill-fault-'), model);
  const good = await loadAdapter(dirs.lora!, model);
  const broken = await loadAdapter(dirs.mixlora!, model);
  broken.dispose(); // its tensors are gone: any forward through it throws
  const engine = new Engine(model, { maxBatch: 8, maxQueue: 0, stopIds: [], metrics: new ServerMetrics() });
  const ids = tokenizer.encode(PROMPTS[0]!);
  const results = await Promise.allSettled([
    serve(engine, ids, good),
    serve(engine, ids, broken),
    serve(engine, tokenizer.encode(PROMPTS[1]!), null),
  ]);
  assert.equal(results[0]!.status, 'fulfilled');
  assert.equal(results[1]!.status, 'rejected', 'the broken adapter’s sequence fails');
  assert.equal(results[2]!.status, 'fulfilled');
  assert.equal((results[0] as PromiseFulfilledResult<number[]>).value.length, NEW_TOKENS);
  await engine.shutdown(1000);
  good.dispose();
  model.dispose();
});

test('without prefix caching, the KV pool stays between requests and is freed after the idle time', async () => {
  const { model, tokenizer } = loadModel(STORIES_BIN, { tokenizer: STORIES_TOK });
  const live = T.liveTensors();
  const engine = new Engine(model, {
    maxBatch: 2,
    maxQueue: 0,
    stopIds: [],
    metrics: new ServerMetrics(),
    idleReleaseMs: 300,
    prefixCache: false,
  });
  const first = await serve(engine, tokenizer.encode(PROMPTS[0]!), null);
  const held = T.liveTensors();
  // Per layer keys and values, and the hidden states.
  assert.equal(held - live, 2 * model.config.numLayers + 1, 'the pool stays after the request');
  // The next request reuses them (a fresh pool would start from zeros again: same tokens either way).
  assert.deepEqual(await serve(engine, tokenizer.encode(PROMPTS[0]!), null), first);
  assert.equal(T.liveTensors(), held);
  const until = Date.now() + 10_000;
  while (T.liveTensors() !== live && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
  assert.equal(T.liveTensors(), live, 'the caches are freed once the engine has been idle');
  assert.deepEqual(await serve(engine, tokenizer.encode(PROMPTS[0]!), null), first, 'and allocated again on demand');
  await engine.shutdown(1000);
  assert.equal(T.liveTensors(), live);
  model.dispose();
});
