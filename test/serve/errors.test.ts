// Bad requests get OpenAI-style error bodies with the right status, and the server keeps serving:
// 400 naming the field, 404 unknown model, 400 naming both numbers on context overflow, 413, 429 with
// Retry-After, 401; a client that goes away mid-stream frees its row.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { MODEL_NAME, postJson, startServer, type Running } from './serve-fixtures.js';

let srv: Running;
before(async () => {
  srv = await startServer({ bodyLimit: 4096 });
});
after(async () => srv.close());

function assertError(r: { status: number; json: Record<string, any> }, status: number, param: string | null) {
  assert.equal(r.status, status, JSON.stringify(r.json));
  const e = r.json.error;
  assert.equal(typeof e.message, 'string');
  assert.equal(typeof e.type, 'string');
  assert.ok('code' in e);
  assert.equal(e.param, param, e.message);
}

test('400 names the field: wrong types, out-of-range values, missing fields, malformed JSON', async () => {
  const url = `${srv.url}/v1/completions`;
  const ok = { model: MODEL_NAME, prompt: 'Once' };
  assertError(await postJson(url, { ...ok, max_tokens: '5' }), 400, 'max_tokens');
  assertError(await postJson(url, { ...ok, temperature: 3 }), 400, 'temperature');
  assertError(await postJson(url, { ...ok, stream: 'yes' }), 400, 'stream');
  assertError(await postJson(url, { model: MODEL_NAME }), 400, 'prompt');
  assertError(await postJson(url, { ...ok, prompt: 5 }), 400, 'prompt');
  assertError(await postJson(url, { ...ok, prompt: [100000] }), 400, 'prompt');
  assertError(await postJson(url, { ...ok, frequency_penalty: 3 }), 400, 'frequency_penalty');
  assertError(await postJson(url, { ...ok, logit_bias: { abc: 1 } }), 400, 'logit_bias');
  assertError(await postJson(url, { ...ok, logit_bias: { '5': 101 } }), 400, 'logit_bias.5');
  assertError(await postJson(url, { ...ok, logit_bias: { '100000': 1 } }), 400, 'logit_bias');
  assertError(await postJson(url, { ...ok, stop_token_ids: [100000] }), 400, 'stop_token_ids');
  assertError(await postJson(url, { ...ok, max_tokens: 0 }), 400, 'max_tokens');
  const bad = await postJson(url, '{"model": "x", "prompt": ');
  assertError(bad, 400, 'body');
  assert.match(bad.json.error.message, /not valid JSON/);
  assertError(
    await postJson(`${srv.url}/v1/chat/completions`, {
      model: MODEL_NAME,
      messages: [{ role: 'robot', content: 'x' }],
    }),
    400,
    'messages.0.role',
  );
  // The official client raises BadRequestError with the same body.
  const client = new OpenAI({ baseURL: `${srv.url}/v1`, apiKey: 'x', maxRetries: 0 });
  await assert.rejects(
    client.completions.create({ model: MODEL_NAME, prompt: 'Once', max_tokens: -1 }),
    (e: InstanceType<typeof OpenAI.BadRequestError>) => e.status === 400 && (e.error as any)?.param === 'max_tokens',
  );
});

test('404 for an unknown model or route; 400 naming both numbers when prompt + max_tokens exceed the context', async () => {
  const r = await postJson(`${srv.url}/v1/completions`, { model: 'nope', prompt: 'Once' });
  assertError(r, 404, 'model');
  assert.match(r.json.error.message, /nope/);
  const route = await fetch(`${srv.url}/v1/nothing`);
  assert.equal(route.status, 404);
  assert.equal(((await route.json()) as { error: { type: string } }).error.type, 'not_found_error');
  const promptLen = srv.loaded.tokenizer.encode('Once upon a time').length;
  const over = await postJson(`${srv.url}/v1/completions`, {
    model: MODEL_NAME,
    prompt: 'Once upon a time',
    max_tokens: 510,
  });
  assertError(over, 400, 'max_tokens');
  assert.equal(over.json.error.code, 'context_length_exceeded');
  assert.match(over.json.error.message, /512/);
  assert.match(over.json.error.message, new RegExp(`${promptLen + 510}`));
  assert.match(over.json.error.message, new RegExp(`${promptLen} in the prompt, 510 for the completion`));
});

test('413 for a body over the limit', async () => {
  const r = await postJson(`${srv.url}/v1/completions`, { model: MODEL_NAME, prompt: 'x'.repeat(5000) });
  assertError(r, 413, null);
});

test('429 with Retry-After when the queue is full; a client that disconnects frees its row', async () => {
  const small = await startServer({ maxBatch: 1, maxQueue: 0 });
  try {
    const abort = new AbortController();
    const res = await fetch(`${small.url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: MODEL_NAME, prompt: 'Once', max_tokens: 500, temperature: 0, stream: true }),
      signal: abort.signal,
    });
    const reader = res.body!.getReader();
    await reader.read(); // the first chunk: the request holds the only row
    assert.equal(small.server.ctx.engine.batchSize, 1);
    const refused = await postJson(`${small.url}/v1/completions`, { model: MODEL_NAME, prompt: 'Once' });
    assertError(refused, 429, null);
    assert.equal(refused.headers.get('retry-after'), '1');
    abort.abort();
    await reader.cancel().catch(() => {});
    // The engine drops the row at its next step.
    for (let i = 0; i < 200 && small.server.ctx.engine.batchSize > 0; i++) await new Promise((r) => setTimeout(r, 25));
    assert.equal(small.server.ctx.engine.batchSize, 0, 'the disconnected row was freed');
    const metrics = await (await fetch(`${small.url}/metrics`)).text();
    assert.match(metrics, /mixlora_running_batch_size 0/);
    assert.match(metrics, /mixlora_requests_total\{model="stories260K",status="429"\} 1/);
    assert.match(metrics, /mixlora_requests_total\{model="stories260K",status="499"\} 1/);
    // And the server keeps serving.
    const next = await postJson(`${small.url}/v1/completions`, { model: MODEL_NAME, prompt: 'Once', max_tokens: 3 });
    assert.equal(next.status, 200);
  } finally {
    await small.close();
  }
});

test('401 without the API key or with a wrong one, on every route but /health', async () => {
  const keyed = await startServer({ apiKey: 'sekret' });
  try {
    const url = `${keyed.url}/v1/completions`;
    const body = { model: MODEL_NAME, prompt: 'Once', max_tokens: 2 };
    assertError(await postJson(url, body), 401, null);
    assertError(await postJson(url, body, { authorization: 'Bearer wrong' }), 401, null);
    assert.equal((await fetch(`${keyed.url}/v1/models`)).status, 401);
    assert.equal((await fetch(`${keyed.url}/metrics`)).status, 401);
    assertError(await postJson(`${keyed.url}/v1/adapters`, { name: 'a', path: 'b' }), 401, null);
    assert.equal((await fetch(`${keyed.url}/health`)).status, 200);
    assert.equal((await postJson(url, body, { authorization: 'Bearer sekret' })).status, 200);
    const client = new OpenAI({ baseURL: `${keyed.url}/v1`, apiKey: 'sekret', maxRetries: 0 });
    assert.equal((await client.models.list()).data.length, 1);
    const wrong = new OpenAI({ baseURL: `${keyed.url}/v1`, apiKey: 'nope', maxRetries: 0 });
    await assert.rejects(wrong.models.list(), OpenAI.AuthenticationError);
  } finally {
    await keyed.close();
  }
});

test('/health and /metrics (Prometheus text with every series)', async () => {
  const h = await fetch(`${srv.url}/health`);
  assert.deepEqual(await h.json(), { status: 'ok' });
  await postJson(`${srv.url}/v1/completions`, { model: MODEL_NAME, prompt: 'Once', max_tokens: 3, temperature: 0 });
  const m = await fetch(`${srv.url}/metrics`);
  assert.match(m.headers.get('content-type') ?? '', /text\/plain/);
  const text = await m.text();
  for (const name of [
    'mixlora_requests_total{model="stories260K",status="200"}',
    'mixlora_generated_tokens_total{model="stories260K"}',
    'mixlora_queue_depth',
    'mixlora_running_batch_size',
    'mixlora_time_to_first_token_seconds_bucket',
    'mixlora_time_per_output_token_seconds_bucket',
  ])
    assert.ok(text.includes(name), name);
});
