// Adapter residency: six adapters under --adapter-root, at most two of them in memory
// (--max-loaded-adapters 2), requested by name (loaded on demand) in a random order by 8 concurrent
// clients. Every greedy text equals `generate` with that adapter, the least recently used idle adapter is
// the one evicted (never one a running request uses), no more than two are ever loaded, and once the
// adapters are unloaded the live tensors are back where they were.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import * as T from '../../src/tensor/index.js';
import { Rng } from '../../src/util/random.js';
import { STORIES_BIN, STORIES_TOK, tempDir } from '../helpers/fixtures.js';
import {
  MODEL_NAME,
  postJson,
  referenceCompletion,
  startServer,
  writeAdapters,
  type Running,
} from './serve-fixtures.js';

const PROMPTS = ['Once upon a time', 'Lily liked to', 'The dog ran'];
const MAX_TOKENS = 12;
let srv: Running;
let root: string;
const names: string[] = [];
const expected = new Map<string, string>();

before(async () => {
  const { loadModel } = await import('../../src/models/load.js');
  const m = loadModel(STORIES_BIN, { tokenizer: STORIES_TOK });
  root = tempDir('mixlora-residency-');
  // Two sets of the three test adapters (other weights): six folders directly under the root.
  for (const [set, seed] of [
    ['a', 11],
    ['b', 31],
  ] as const) {
    for (const [kind, dir] of Object.entries(writeAdapters(tempDir(), m.model, seed))) {
      const name = `${kind}-${set}`;
      fs.renameSync(dir, path.join(root, name));
      names.push(name);
    }
  }
  m.model.dispose();
  srv = await startServer({ adapterRoot: root, maxLoadedAdapters: 2, maxBatch: 8 });
  for (const name of names)
    for (const prompt of PROMPTS)
      expected.set(
        `${name}|${prompt}`,
        await referenceCompletion(srv.loaded, path.join(root, name), prompt, MAX_TOKENS),
      );
});
after(async () => srv.close());

const metric = (text: string, name: string) => Number(new RegExp(`^${name} (\\d+)`, 'm').exec(text)?.[1] ?? 0);

test('8 clients over 6 adapters with 2 in memory: texts equal generate, LRU evictions, tensors back', async () => {
  // Warm-up: the engine's KV caches (kept while the server is busy) exist before counting.
  assert.equal(
    (await postJson(`${srv.url}/v1/completions`, { model: MODEL_NAME, prompt: 'Hi', max_tokens: 2 })).status,
    200,
  );
  const baseline = T.liveTensors();
  const registry = srv.server.ctx.registry;
  let mostLoaded = 0;
  const watch = setInterval(() => {
    mostLoaded = Math.max(mostLoaded, registry.list().filter((m) => m.adapter !== null).length);
  }, 1);
  const rng = new Rng(2026);
  const client = async (c: number) => {
    for (let i = 0; i < 6; i++) {
      const name = names[rng.next() % names.length]!;
      const prompt = PROMPTS[(c + i) % PROMPTS.length]!;
      const r = await postJson(`${srv.url}/v1/completions`, {
        model: name,
        prompt,
        max_tokens: MAX_TOKENS,
        temperature: 0,
      });
      assert.equal(r.status, 200, `${name}: ${r.text}`);
      assert.equal(r.json.choices[0].text, expected.get(`${name}|${prompt}`), `${name}, '${prompt}'`);
      mostLoaded = Math.max(mostLoaded, registry.list().filter((m) => m.adapter !== null).length);
    }
  };
  try {
    await Promise.all(Array.from({ length: 8 }, (_, c) => client(c)));
  } finally {
    clearInterval(watch);
  }
  assert.ok(mostLoaded <= 2, `at most 2 adapters in memory (saw ${mostLoaded})`);
  const metrics = await (await fetch(`${srv.url}/metrics`)).text();
  assert.ok(metric(metrics, 'mixlora_adapter_evictions_total\\{reason="lru"\\}') > 0, 'adapters were evicted');
  assert.ok(metric(metrics, 'mixlora_adapter_loads_total\\{reason="reload"\\}') > 0, 'and loaded again');
  assert.ok(metric(metrics, 'mixlora_adapters_loaded') <= 2);

  // The least recently used idle adapter goes: with a and b loaded and a used last, loading c evicts b.
  const [a, b, c] = names.filter((n) => registry.list().every((m) => m.name !== n || m.adapter === null));
  if (a && b && c) {
    for (const name of [b, a, c])
      assert.equal(
        (await postJson(`${srv.url}/v1/completions`, { model: name, prompt: 'Hi', max_tokens: 1 })).status,
        200,
      );
    const loaded = registry
      .list()
      .filter((m) => m.adapter !== null)
      .map((m) => m.name)
      .sort();
    assert.deepEqual(loaded, [a, c].sort());
  }

  for (const m of registry.list())
    if (m.name !== MODEL_NAME) await fetch(`${srv.url}/v1/adapters/${m.name}`, { method: 'DELETE' });
  await postJson(`${srv.url}/v1/completions`, { model: MODEL_NAME, prompt: 'Hi', max_tokens: 2 }); // the engine clears its stacks when idle
  assert.equal(T.liveTensors(), baseline, 'no tensor left behind by loads and evictions');
});
