// Adapters at run time: POST /v1/adapters loads from inside --adapter-root only (not '..', not an
// absolute path elsewhere, not a symbolic link out), DELETE unloads once running requests end.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import * as T from '../../src/tensor/index.js';
import { STORIES_BIN, STORIES_TOK, tempDir } from '../helpers/fixtures.js';
import {
  MODEL_NAME,
  postJson,
  referenceCompletion,
  startServer,
  writeAdapters,
  type Running,
} from './serve-fixtures.js';

let srv: Running;
let root: string;
let outside: Record<string, string>;

before(async () => {
  const { loadModel } = await import('../../src/models/load.js');
  const m = loadModel(STORIES_BIN, { tokenizer: STORIES_TOK });
  root = tempDir('mixlora-adapter-root-');
  writeAdapters(root, m.model);
  outside = writeAdapters(tempDir('mixlora-outside-'), m.model);
  // A second DoRA adapter (other weights), to swap in under a name that served the first.
  fs.renameSync(writeAdapters(tempDir('mixlora-dora-2-'), m.model, 40).dora!, path.join(root, 'dora-2'));
  m.model.dispose();
  fs.symlinkSync(outside.lora!, path.join(root, 'link-out'));
  fs.mkdirSync(path.join(root, 'empty'));
  srv = await startServer({ adapterRoot: root });
});
after(async () => srv.close());

const del = async (url: string) => {
  const r = await fetch(url, { method: 'DELETE' });
  return { status: r.status, json: (await r.json()) as Record<string, any> };
};

test('an adapter loaded at run time serves what `generate` gives with it; then it is unloaded', async () => {
  // One request first: the engine's KV caches, which stay while the server is busy, exist before counting.
  assert.equal(
    (await postJson(`${srv.url}/v1/completions`, { model: MODEL_NAME, prompt: 'Hi', max_tokens: 2 })).status,
    200,
  );
  const before = T.liveTensors();
  const load = await postJson(`${srv.url}/v1/adapters`, { name: 'story-lora', path: 'lora' });
  assert.equal(load.status, 201, load.text);
  assert.equal(load.json.id, 'story-lora');
  const ids = ((await (await fetch(`${srv.url}/v1/models`)).json()) as { data: { id: string }[] }).data.map(
    (m) => m.id,
  );
  assert.deepEqual(ids.sort(), [MODEL_NAME, 'story-lora'].sort());
  const r = await postJson(`${srv.url}/v1/completions`, {
    model: 'story-lora',
    prompt: 'Once upon a time',
    max_tokens: 16,
    temperature: 0,
  });
  assert.equal(r.status, 200);
  assert.equal(
    r.json.choices[0].text,
    await referenceCompletion(srv.loaded, path.join(root, 'lora'), 'Once upon a time', 16),
  );
  assert.equal((await postJson(`${srv.url}/v1/adapters`, { name: 'story-lora', path: 'dora' })).status, 409);

  // Unloading while a request runs: it finishes, later ones get 404, the tensors are freed.
  const res = await fetch(`${srv.url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'story-lora', prompt: 'Once', max_tokens: 200, temperature: 0, stream: true }),
  });
  const reader = res.body!.getReader();
  await reader.read(); // the first chunk: the request is running
  const d = await del(`${srv.url}/v1/adapters/story-lora`);
  assert.equal(d.status, 200);
  assert.equal(d.json.deleted, true);
  let rest = '';
  for (let i = 0; i < 10_000; i++) {
    const { done, value } = await reader.read();
    if (done) break;
    rest += new TextDecoder().decode(value);
  }
  assert.ok(rest.endsWith('data: [DONE]\n\n') && /"finish_reason":"(length|stop)"/.test(rest), 'it ran to its end');
  assert.equal((await postJson(`${srv.url}/v1/completions`, { model: 'story-lora', prompt: 'Once' })).status, 404);
  assert.equal((await del(`${srv.url}/v1/adapters/story-lora`)).status, 404);
  assert.equal(T.liveTensors(), before, 'the unloaded adapter left no tensor behind');
});

test('a DoRA adapter unloaded and another loaded under its name: each serves its own weights', async () => {
  const before = T.liveTensors();
  for (const folder of ['dora', 'dora-2']) {
    assert.equal((await postJson(`${srv.url}/v1/adapters`, { name: 'swap', path: folder })).status, 201);
    const r = await postJson(`${srv.url}/v1/completions`, {
      model: 'swap',
      prompt: 'Once upon a time',
      max_tokens: 16,
      temperature: 0,
    });
    assert.equal(
      r.json.choices[0].text,
      await referenceCompletion(srv.loaded, path.join(root, folder), 'Once upon a time', 16),
      folder,
    );
    assert.equal((await del(`${srv.url}/v1/adapters/swap`)).status, 200);
  }
  assert.equal(T.liveTensors(), before, 'no precomputed scale left behind');
});

test('paths outside the adapter root are refused (.., absolute, symbolic link); bad folders are 4xx', async () => {
  const load = (name: string, p: string) => postJson(`${srv.url}/v1/adapters`, { name, path: p });
  for (const p of [`../${path.basename(path.dirname(outside.lora!))}/lora`, outside.lora!, 'link-out', '.', '/etc']) {
    const r = await load('x', p);
    assert.equal(r.status, 403, `${p}: ${r.text}`);
    assert.equal(r.json.error.param, 'path');
    assert.equal(r.json.error.type, 'permission_error');
  }
  assert.equal((await load('x', 'missing')).status, 404);
  const empty = await load('x', 'empty');
  assert.equal(empty.status, 400);
  assert.match(empty.json.error.message, /adapter_config\.json/);
  assert.equal((await load('bad/name', 'lora')).status, 400);
  assert.equal((await del(`${srv.url}/v1/adapters/${MODEL_NAME}`)).status, 400, 'the base model stays');
  const inside = await load('mix', 'mixlora');
  assert.equal(inside.status, 201, inside.text);
  assert.equal((await del(`${srv.url}/v1/adapters/mix`)).status, 200);
});

test('without --adapter-root, run-time loading is refused', async () => {
  const plain = await startServer();
  try {
    const r = await postJson(`${plain.url}/v1/adapters`, { name: 'x', path: 'lora' });
    assert.equal(r.status, 403);
    assert.match(r.json.error.message, /--adapter-root/);
  } finally {
    await plain.close();
  }
});
