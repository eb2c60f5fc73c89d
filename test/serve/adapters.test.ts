// Adapters at run time: POST /v1/adapters loads from inside --adapter-root only (not '..', not an
// absolute path elsewhere, not a symbolic link out), DELETE unloads once running requests end.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
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

test('paths outside the adapter root get the answer of a missing one (.., absolute, symbolic link); bad folders are 4xx', async () => {
  const load = (name: string, p: string) => postJson(`${srv.url}/v1/adapters`, { name, path: p });
  const missing = await load('x', 'missing');
  assert.equal(missing.status, 404);
  for (const p of [`../${path.basename(path.dirname(outside.lora!))}/lora`, outside.lora!, 'link-out', '.', '/etc']) {
    const r = await load('x', p);
    // The same status, type and code as a folder that does not exist: nothing is told about the server's
    // files outside the root.
    assert.equal(r.status, 404, `${p}: ${r.text}`);
    assert.equal(r.json.error.param, 'path');
    assert.equal(r.json.error.code, missing.json.error.code);
    assert.equal(r.json.error.type, missing.json.error.type);
  }
  const empty = await load('x', 'empty');
  assert.equal(empty.status, 400);
  assert.match(empty.json.error.message, /adapter_config\.json/);
  assert.equal((await load('bad/name', 'lora')).status, 400);
  assert.equal((await del(`${srv.url}/v1/adapters/${MODEL_NAME}`)).status, 400, 'the base model stays');
  const inside = await load('mix', 'mixlora');
  assert.equal(inside.status, 201, inside.text);
  assert.equal(inside.json.root, 'mixlora', 'the root is shown relative to the adapter root');
  assert.equal((await del(`${srv.url}/v1/adapters/mix`)).status, 200);
});

test("an adapter folder's files are read only as regular files inside the root, without blocking the server", async () => {
  const load = (name: string, p: string) => postJson(`${srv.url}/v1/adapters`, { name, path: p });
  const secret = path.join(tempDir('mixlora-secret-'), 'secret.txt');
  fs.writeFileSync(secret, 'root:x:0:0:top-secret\n');
  // adapter_config.json linked to a file outside the root: refused before reading, its text never quoted.
  const linked = path.join(root, 'linked-config');
  fs.mkdirSync(linked);
  fs.symlinkSync(secret, path.join(linked, 'adapter_config.json'));
  fs.copyFileSync(path.join(root, 'lora', 'adapter_model.safetensors'), path.join(linked, 'adapter_model.safetensors'));
  const r = await load('x', 'linked-config');
  assert.equal(r.status, 400, r.text);
  assert.doesNotMatch(r.text, /top-secret|root:x/);
  assert.doesNotMatch(r.text, new RegExp(secret.replaceAll('/', '\\/')));
  assert.match(r.json.error.message, /linked-config\/adapter_config\.json is a symbolic link out of the adapter root/);
  // Weights linked to a file outside the root: the same.
  const weights = path.join(root, 'linked-weights');
  fs.mkdirSync(weights);
  fs.copyFileSync(path.join(root, 'lora', 'adapter_config.json'), path.join(weights, 'adapter_config.json'));
  fs.symlinkSync(
    path.join(outside.lora!, 'adapter_model.safetensors'),
    path.join(weights, 'adapter_model.safetensors'),
  );
  assert.equal((await load('x', 'linked-weights')).status, 400);
  // A FIFO named adapter_config.json: refused at once; the server answers others meanwhile.
  const fifo = path.join(root, 'fifo');
  fs.mkdirSync(fifo);
  spawnSync('mkfifo', [path.join(fifo, 'adapter_config.json')]);
  const [f, health] = await Promise.all([load('x', 'fifo'), fetch(`${srv.url}/health`)]);
  assert.equal(f.status, 400, f.text);
  assert.match(f.json.error.message, /fifo\/adapter_config\.json is not a regular file/);
  assert.equal(health.status, 200);
  // A weights file larger than the adapter its config describes can hold: refused before it is read.
  const big = path.join(root, 'big');
  fs.mkdirSync(big);
  fs.copyFileSync(path.join(root, 'lora', 'adapter_config.json'), path.join(big, 'adapter_config.json'));
  fs.writeFileSync(path.join(big, 'adapter_model.safetensors'), '');
  fs.truncateSync(path.join(big, 'adapter_model.safetensors'), 1 << 30); // 1 GiB, sparse
  const b = await load('x', 'big');
  assert.equal(b.status, 400);
  assert.match(b.json.error.message, /big\/adapter_model\.safetensors is \d+ bytes, more than/);
  // No message names a server path.
  for (const res of [r, f, b]) assert.doesNotMatch(res.text, /\/tmp\/|mixlora-adapter-/);
});

test("vLLM's load_lora_adapter / unload_lora_adapter; /v1/models names the parent; a draining name can be loaded again", async () => {
  const load = await postJson(`${srv.url}/v1/load_lora_adapter`, { lora_name: 'v-lora', lora_path: 'lora' });
  assert.equal(load.status, 200, load.text);
  assert.match(load.text, /Success: LoRA adapter 'v-lora' added successfully/);
  const models = (await (await fetch(`${srv.url}/v1/models`)).json()) as { data: Record<string, unknown>[] };
  const entry = models.data.find((m) => m.id === 'v-lora')!;
  assert.equal(entry.parent, MODEL_NAME);
  assert.equal(entry.root, 'lora');
  const base = models.data.find((m) => m.id === MODEL_NAME)!;
  assert.equal(base.parent, null);
  assert.ok(!JSON.stringify(models).includes(root), 'no server path in /v1/models');
  // Absolute paths inside the root are accepted (vLLM's lora_path is a server path).
  const again = await postJson(`${srv.url}/v1/load_lora_adapter`, {
    lora_name: 'v-lora',
    lora_path: path.join(root, 'dora'),
  });
  assert.equal(again.status, 409, 'the name is in use');
  const inplace = await postJson(`${srv.url}/v1/load_lora_adapter`, {
    lora_name: 'v-lora',
    lora_path: path.join(root, 'dora'),
    load_inplace: true,
  });
  assert.equal(inplace.status, 200, inplace.text);
  const r = await postJson(`${srv.url}/v1/completions`, {
    model: 'v-lora',
    prompt: 'Once upon a time',
    max_tokens: 12,
    temperature: 0,
  });
  assert.equal(
    r.json.choices[0].text,
    await referenceCompletion(srv.loaded, path.join(root, 'dora'), 'Once upon a time', 12),
  );
  // Unloaded while a request runs: the name is free again at once (the old adapter drains).
  const res = await fetch(`${srv.url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'v-lora', prompt: 'Once', max_tokens: 200, temperature: 0, stream: true }),
  });
  const reader = res.body!.getReader();
  await reader.read();
  const un = await postJson(`${srv.url}/v1/unload_lora_adapter`, { lora_name: 'v-lora' });
  assert.equal(un.status, 200, un.text);
  assert.match(un.text, /removed successfully/);
  const reload = await postJson(`${srv.url}/v1/load_lora_adapter`, { lora_name: 'v-lora', lora_path: 'lora' });
  assert.equal(reload.status, 200, reload.text);
  while (!(await reader.read()).done);
  assert.equal((await postJson(`${srv.url}/v1/unload_lora_adapter`, { lora_name: 'v-lora' })).status, 200);
  assert.equal((await postJson(`${srv.url}/v1/unload_lora_adapter`, { lora_name: 'v-lora' })).status, 404);
  assert.equal((await postJson(`${srv.url}/v1/load_lora_adapter`, { lora_name: 'x' })).status, 400);
});

test('a request naming a folder of the adapter root loads it on demand (not one outside)', async () => {
  const before = (await (await fetch(`${srv.url}/metrics`)).text()).match(
    /mixlora_adapter_loads_total\{reason="on_demand"\} (\d+)/,
  );
  const r = await postJson(`${srv.url}/v1/completions`, {
    model: 'mixlora',
    prompt: 'Once upon a time',
    max_tokens: 12,
    temperature: 0,
  });
  assert.equal(r.status, 200, r.text);
  assert.equal(
    r.json.choices[0].text,
    await referenceCompletion(srv.loaded, path.join(root, 'mixlora'), 'Once upon a time', 12),
  );
  const metrics = await (await fetch(`${srv.url}/metrics`)).text();
  const after = metrics.match(/mixlora_adapter_loads_total\{reason="on_demand"\} (\d+)/);
  assert.equal(Number(after?.[1] ?? 0) - Number(before?.[1] ?? 0), 1);
  for (const name of ['link-out', 'empty', 'nothing-here'])
    assert.equal((await postJson(`${srv.url}/v1/completions`, { model: name, prompt: 'Once' })).status, 404, name);
  assert.equal((await del(`${srv.url}/v1/adapters/mixlora`)).status, 200);
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
