// The server under careless or hostile clients: a client that sends its headers or body slowly (or never)
// is cut off at its timeout, no client holds more than its share of connections, /health keeps answering
// meanwhile; a huge prompt is refused before it is tokenised; the Bearer scheme is case-insensitive; a
// schema error names the shape the field has, not the first alternative's.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { MODEL_NAME, postJson, startServer, type Running } from './serve-fixtures.js';

let srv: Running;
let port: number;
before(async () => {
  srv = await startServer({
    bodyLimit: 4 << 20,
    apiKey: 'secret-key',
    limits: {
      headersTimeoutMs: 1000,
      requestTimeoutMs: 1500,
      keepAliveTimeoutMs: 1000,
      idleTimeoutMs: 5000,
      maxConnections: 24,
      maxConnectionsPerClient: 20,
    },
  });
  port = Number(new URL(srv.url).port);
});
after(async () => srv.close());

const auth = { authorization: 'Bearer secret-key' };

/** A raw connection that sends `data` and then nothing; resolves when the server closes it (or after `ms`). */
function stall(data: string, ms: number): Promise<'closed' | 'open'> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1', () => socket.write(data));
    socket.on('data', () => {});
    socket.on('error', () => {});
    const timer = setTimeout(() => {
      socket.destroy();
      resolve('open');
    }, ms);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve('closed');
    });
  });
}

test('clients that stall in their headers or body are cut off at the timeouts; /health answers meanwhile', async () => {
  const partialHeaders = 'POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n';
  const partialBody =
    'POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"model"';
  const stalled = [
    ...Array.from({ length: 8 }, () => stall(partialHeaders, 8000)),
    ...Array.from({ length: 8 }, () => stall(partialBody, 8000)),
  ];
  await new Promise((r) => setTimeout(r, 200));
  assert.equal((await fetch(`${srv.url}/health`)).status, 200, 'health answers while 16 clients stall');
  assert.deepEqual(await Promise.all(stalled), new Array(16).fill('closed'), 'every stalled connection was closed');
});

test('connections past the per-client limit are closed at once; the others keep working', async () => {
  const held: net.Socket[] = [];
  const closedAtOnce: Promise<boolean>[] = [];
  for (let i = 0; i < 23; i++) {
    const socket = net.connect(port, '127.0.0.1');
    socket.on('error', () => {});
    held.push(socket);
    closedAtOnce.push(
      new Promise((resolve) => {
        socket.on('close', () => resolve(true));
        setTimeout(() => resolve(false), 500);
      }),
    );
    await new Promise((r) => socket.once('connect', r));
  }
  const closed = (await Promise.all(closedAtOnce)).filter(Boolean).length;
  assert.equal(closed, 3, 'the 21st to 23rd connections from one address were closed');
  for (const s of held) s.destroy();
  await new Promise((r) => setTimeout(r, 100));
  assert.equal((await fetch(`${srv.url}/health`)).status, 200);
});

test('a prompt longer than the context can hold in characters is refused before it is tokenised', async () => {
  const tok = srv.loaded.tokenizer;
  const encode = tok.encode.bind(tok);
  let longest = 0;
  tok.encode = (text, opts) => {
    longest = Math.max(longest, text.length);
    return encode(text, opts);
  };
  try {
    const huge = 'Once upon a time '.repeat(60_000); // ~1 MB
    const r = await postJson(`${srv.url}/v1/completions`, { model: MODEL_NAME, prompt: huge, max_tokens: 1 }, auth);
    assert.equal(r.status, 400, r.text.slice(0, 300));
    assert.equal(r.json.error.code, 'context_length_exceeded');
    assert.match(r.json.error.message, /characters/);
    const listed = await postJson(`${srv.url}/v1/completions`, { model: MODEL_NAME, prompt: ['Hi', huge] }, auth);
    assert.equal(listed.json.error.param, 'prompt[1]');
    const chat = await postJson(
      `${srv.url}/v1/chat/completions`,
      { model: MODEL_NAME, messages: [{ role: 'user', content: huge }] },
      auth,
    );
    assert.equal(chat.status, 400);
    assert.ok(longest < 100_000, `the huge prompt reached the tokenizer (${longest} characters)`);
  } finally {
    tok.encode = encode;
  }
});

test('Bearer is case-insensitive; a wrong key is 401', async () => {
  for (const scheme of ['Bearer', 'bearer', 'BEARER'])
    assert.equal(
      (await fetch(`${srv.url}/v1/models`, { headers: { authorization: `${scheme} secret-key` } })).status,
      200,
    );
  assert.equal((await fetch(`${srv.url}/v1/models`, { headers: { authorization: 'bearer wrong' } })).status, 401);
  assert.equal((await fetch(`${srv.url}/v1/models`)).status, 401);
});

test('schema errors name the shape the value has (too many stop strings, prompts) or the shapes allowed', async () => {
  const url = `${srv.url}/v1/completions`;
  const stops = await postJson(url, { model: MODEL_NAME, prompt: 'Hi', stop: ['a', 'b', 'c', 'd', 'e'] }, auth);
  assert.equal(stops.status, 400);
  assert.equal(stops.json.error.param, 'stop');
  assert.match(stops.json.error.message, /more than 4 items/);
  const prompts = await postJson(url, { model: MODEL_NAME, prompt: new Array(65).fill('Hi') }, auth);
  assert.equal(prompts.json.error.param, 'prompt');
  assert.match(prompts.json.error.message, /more than 64 items/);
  const shape = await postJson(url, { model: MODEL_NAME, prompt: { text: 'Hi' } }, auth);
  assert.equal(shape.json.error.param, 'prompt');
  assert.match(
    shape.json.error.message,
    /must be a string, an array of strings, an array of integers or an array of arrays/,
  );
});
