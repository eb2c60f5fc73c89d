// Automatic prefix caching and the paged KV cache, end to end: a server with prefix caching gives the same
// greedy texts and log-probabilities (1e-4) as one without it, on hits and misses, prompts ending inside
// a block or on its edge, the same prompt through two adapters, an adapter unloaded and loaded again
// under its name (never its predecessor's blocks), echoed prompt log-probabilities from cached blocks, and
// a KV cache too small for the traffic (sequences wait or are computed again, never fail). Live tensors
// return to where they were.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import * as T from '../../src/tensor/index.js';
import { STORIES_BIN, STORIES_TOK, tempDir } from '../helpers/fixtures.js';
import { BLOCK_SIZE } from '../../src/serve/block-pool.js';
import { MODEL_NAME, postJson, startServer, writeAdapters, type Running } from './serve-fixtures.js';

const SYSTEM =
  'Once upon a time, there was a little girl named Lily. She liked to play in the park with her friends. ' +
  'One day, she saw a big dog. The dog was brown and had a long tail. Lily was scared, but her mom said ' +
  'the dog was nice. Lily went to the dog and gave it a hug. ';
const SUFFIXES = ['The dog', 'Lily was', 'She wanted to', 'They played'];

let cached: Running;
let plain: Running;
let root: string;

before(async () => {
  const { loadModel } = await import('../../src/models/load.js');
  const m = loadModel(STORIES_BIN, { tokenizer: STORIES_TOK });
  root = tempDir('mixlora-prefix-');
  writeAdapters(root, m.model);
  fs.renameSync(writeAdapters(tempDir(), m.model, 40).dora!, path.join(root, 'dora-2'));
  m.model.dispose();
  const adapters: [string, string][] = ['lora', 'mixlora'].map((n) => [n, path.join(root, n)]);
  cached = await startServer({ adapters, adapterRoot: root });
  plain = await startServer({ adapters, adapterRoot: root, prefixCache: false });
});
after(async () => {
  await cached.close();
  await plain.close();
});

interface Answer {
  text: string;
  logprobs: (number | null)[];
  tokens: string[];
}

async function complete(srv: Running, model: string, prompt: string | number[], extra: Record<string, unknown> = {}) {
  const r = await postJson(`${srv.url}/v1/completions`, {
    model,
    prompt,
    max_tokens: 10,
    temperature: 0,
    logprobs: 2,
    ...extra,
  });
  assert.equal(r.status, 200, r.text);
  const c = r.json.choices[0];
  return { text: c.text, logprobs: c.logprobs.token_logprobs, tokens: c.logprobs.tokens } as Answer;
}

function assertSame(a: Answer, b: Answer, what: string) {
  assert.equal(a.text, b.text, what);
  assert.deepEqual(a.tokens, b.tokens, what);
  a.logprobs.forEach((x, i) => {
    const y = b.logprobs[i]!;
    assert.ok((x === null && y === null) || Math.abs(x! - y) < 1e-4, `${what}, token ${i}: ${x} vs ${y}`);
  });
}

const hits = async (srv: Running) =>
  Number(
    /^mixlora_prefix_cache_hit_tokens_total (\d+)/m.exec(await (await fetch(`${srv.url}/metrics`)).text())?.[1] ?? 0,
  );

test('hits and misses, on the base model and two adapters, equal a server without prefix caching', async () => {
  const tok = cached.loaded.tokenizer;
  assert.ok(tok.encode(SYSTEM).length > 3 * BLOCK_SIZE, 'the shared prefix spans several blocks');
  for (const model of [MODEL_NAME, 'lora', 'mixlora']) {
    for (const suffix of SUFFIXES) {
      const prompt = SYSTEM + suffix;
      const before = await hits(cached);
      const got = await complete(cached, model, prompt);
      assertSame(got, await complete(plain, model, prompt), `${model}: '${suffix}'`);
      // After the first request of each model, its prefix blocks are found.
      if (suffix !== SUFFIXES[0]) assert.ok((await hits(cached)) > before, `${model}: '${suffix}' hit the cache`);
    }
  }
  // A prompt of whole blocks, and one ending one token into a block: the same again (twice: miss, then hit).
  const ids = tok.encode(SYSTEM);
  for (const n of [2 * BLOCK_SIZE, 2 * BLOCK_SIZE + 1, 3 * BLOCK_SIZE - 1])
    for (let round = 0; round < 2; round++)
      assertSame(
        await complete(cached, 'lora', ids.slice(0, n)),
        await complete(plain, 'lora', ids.slice(0, n)),
        `${n} tokens, round ${round}`,
      );
});

test('echoed prompt log-probabilities come from cached blocks too, equal to computing them', async () => {
  const prompt = SYSTEM + 'In the end';
  await complete(cached, 'mixlora', prompt); // the prefix is cached now
  const before = await hits(cached);
  const got = await complete(cached, 'mixlora', prompt, { echo: true, max_tokens: 1 });
  assert.ok((await hits(cached)) > before, 'served from the cache');
  const want = await complete(plain, 'mixlora', prompt, { echo: true, max_tokens: 1 });
  assertSame(got, want, 'echo');
  assert.equal(got.logprobs[0], null);
  // Once scored, a prefix's scores are kept with its blocks: the next echo takes them (with fewer alternatives too).
  assertSame(await complete(cached, 'mixlora', prompt, { echo: true, max_tokens: 1 }), want, 'echo again');
  const fewer = await complete(cached, 'mixlora', prompt, { echo: true, max_tokens: 1, logprobs: 1 });
  assertSame(fewer, await complete(plain, 'mixlora', prompt, { echo: true, max_tokens: 1, logprobs: 1 }), 'top 1');
});

test('an adapter unloaded and loaded again under its name never reuses its predecessor’s blocks', async () => {
  const prompt = SYSTEM + 'The end.';
  for (const folder of ['dora', 'dora-2']) {
    for (const srv of [cached, plain])
      assert.equal((await postJson(`${srv.url}/v1/adapters`, { name: 'swap', path: folder })).status, 201);
    // Twice on the cached server: the second one hits this adapter's own blocks.
    const first = await complete(cached, 'swap', prompt);
    const second = await complete(cached, 'swap', prompt);
    const want = await complete(plain, 'swap', prompt);
    assertSame(first, want, `${folder}, first`);
    assertSame(second, want, `${folder}, second`);
    for (const srv of [cached, plain])
      assert.equal((await fetch(`${srv.url}/v1/adapters/swap`, { method: 'DELETE' })).status, 200);
  }
});

test('a KV cache too small for the traffic: sequences wait or are computed again, and answer as if it were not', async () => {
  const small = await startServer({ kvCacheMib: 1, maxBatch: 8, adapters: [['lora', path.join(root, 'lora')]] });
  try {
    const extra = { max_tokens: 100, logprobs: 0, ignore_eos: true };
    const requests = Array.from({ length: 8 }, (_, i) => ({
      model: i % 2 ? 'lora' : MODEL_NAME,
      prompt: SYSTEM.slice(0, 40 + 10 * i) + SUFFIXES[i % SUFFIXES.length],
    }));
    // The references from the server with room for everything (the one without prefix caching frees its
    // pool after an idle spell, which would move the count of live tensors).
    const want = await Promise.all(requests.map((r) => complete(cached, r.model, r.prompt, extra)));
    await complete(small, MODEL_NAME, 'Hi');
    const live = T.liveTensors();
    const engine = small.server.ctx.engine;
    const blocks = engine.pool.numBlocks;
    const answers = await Promise.all(requests.map((r) => complete(small, r.model, r.prompt, extra)));
    answers.forEach((a, i) => assertSame(a, want[i]!, `request ${i}`));
    const positions = answers.reduce((n, a) => n + a.tokens.length, 0);
    assert.ok(
      positions > blocks * BLOCK_SIZE,
      `the traffic (${positions} positions) exceeds the pool (${blocks} blocks)`,
    );
    assert.ok(engine.preemptions > 0 || engine.peakBatch < 8, 'sequences waited or were computed again');
    // The engine drops its stacked adapter copies once idle (a loop turn after the last answer).
    for (let i = 0; i < 100 && T.liveTensors() !== live; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(T.liveTensors(), live, 'no tensor left behind');
  } finally {
    await small.close();
  }
});
