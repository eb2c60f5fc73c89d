// mixlora serve's OpenAI API through the official `openai` client and raw HTTP: the models list,
// completions equal to `generate` (CLI and library) for the base model and each adapter, chat through
// the tokenizer's template, streaming, stop strings, n, echo, logprobs and seeded sampling.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { mixlora } from '../helpers/cli.js';
import { STORIES_BIN, STORIES_TOK, tempDir } from '../helpers/fixtures.js';
import {
  MODEL_NAME,
  chatTokenizerDir,
  postJson,
  referenceCompletion,
  sseRecords,
  startServer,
  writeAdapters,
  type Running,
} from './serve-fixtures.js';

let srv: Running;
let client: OpenAI;
let dirs: Record<string, string>;
const PROMPT = 'Once upon a time';

before(async () => {
  const root = tempDir();
  const { loadModel } = await import('../../src/models/load.js');
  const m = loadModel(STORIES_BIN, { tokenizer: STORIES_TOK });
  dirs = writeAdapters(root, m.model);
  m.model.dispose();
  srv = await startServer({ adapters: Object.entries(dirs) });
  client = new OpenAI({ baseURL: `${srv.url}/v1`, apiKey: 'unused', maxRetries: 0 });
});
after(async () => srv.close());

test('GET /v1/models lists the base model and every adapter', async () => {
  const page = await client.models.list();
  const ids = page.data.map((m) => m.id).sort();
  assert.deepEqual(ids, [MODEL_NAME, 'dora', 'lora', 'mixlora'].sort());
  const lora = page.data.find((m) => m.id === 'lora') as unknown as Record<string, unknown>;
  assert.equal(lora.parent, MODEL_NAME);
  assert.equal(lora.object, 'model');
});

test('greedy completions equal `bin/mixlora generate` for the base model and each adapter', async () => {
  const texts = new Set<string>();
  for (const name of [MODEL_NAME, 'lora', 'dora', 'mixlora']) {
    const r = await client.completions.create({ model: name, prompt: PROMPT, max_tokens: 24, temperature: 0 });
    const adapterArgs = name === MODEL_NAME ? [] : ['--adapter', dirs[name]!];
    const cli = mixlora([
      'generate',
      '--model',
      STORIES_BIN,
      '--tokenizer',
      STORIES_TOK,
      '--prompt',
      PROMPT,
      '--max-new-tokens',
      '24',
      '--json',
      ...adapterArgs,
    ]);
    assert.equal(cli.code, 0, cli.stderr);
    const expected = JSON.parse(cli.stdout).completions[0] as string;
    assert.equal(r.choices[0]!.text, expected, name);
    assert.equal(r.object, 'text_completion');
    assert.equal(r.model, name);
    texts.add(expected);
    const promptTokens = srv.loaded.tokenizer.encode(PROMPT).length;
    assert.equal(r.usage!.prompt_tokens, promptTokens);
    assert.ok(r.usage!.completion_tokens >= 1 && r.usage!.completion_tokens <= 24);
    assert.equal(r.usage!.total_tokens, promptTokens + r.usage!.completion_tokens);
    assert.equal(r.choices[0]!.finish_reason, r.usage!.completion_tokens === 24 ? 'length' : 'stop');
  }
  assert.equal(texts.size, 4, 'each adapter changes the output');
});

test('concurrent requests of different adapters each equal their `generate` alone', async () => {
  const prompts = [PROMPT, 'The little dog', 'Tom and Sue went to', 'A big red ball'];
  const names = [MODEL_NAME, 'lora', 'dora', 'mixlora'];
  const cases = prompts.flatMap((p) => names.map((n) => ({ p, n })));
  srv.server.ctx.engine.peakBatch = 0;
  const got = await Promise.all(
    cases.map(({ p, n }) => client.completions.create({ model: n, prompt: p, max_tokens: 20, temperature: 0 })),
  );
  assert.ok(srv.server.ctx.engine.peakBatch >= 8, `rows shared decode steps (peak ${srv.server.ctx.engine.peakBatch})`);
  for (let i = 0; i < cases.length; i++) {
    const { p, n } = cases[i]!;
    const expected = await referenceCompletion(srv.loaded, n === MODEL_NAME ? null : dirs[n]!, p, 20);
    assert.equal(got[i]!.choices[0]!.text, expected, `${n}: ${p}`);
  }
});

test('streaming: OpenAI chunks whose text adds up to the non-streamed completion, then [DONE]', async () => {
  const whole = await client.completions.create({ model: 'lora', prompt: PROMPT, max_tokens: 16, temperature: 0 });
  const stream = await client.completions.create({
    model: 'lora',
    prompt: PROMPT,
    max_tokens: 16,
    temperature: 0,
    stream: true,
    stream_options: { include_usage: true },
  });
  let text = '';
  let finish: string | null = null;
  let usage: unknown = null;
  let chunks = 0;
  for await (const c of stream) {
    if (c.usage) usage = c.usage;
    for (const ch of c.choices) {
      text += ch.text;
      if (ch.finish_reason) finish = ch.finish_reason;
    }
    chunks++;
  }
  assert.equal(text, whole.choices[0]!.text);
  assert.equal(finish, whole.choices[0]!.finish_reason);
  assert.deepEqual(usage, whole.usage);
  assert.ok(chunks >= 3, `${chunks} chunks`);
  // Raw: every record is data: JSON, and the last is data: [DONE].
  const raw = await postJson(`${srv.url}/v1/completions`, {
    model: MODEL_NAME,
    prompt: PROMPT,
    max_tokens: 4,
    temperature: 0,
    stream: true,
  });
  assert.equal(raw.status, 200);
  assert.match(raw.headers.get('content-type') ?? '', /text\/event-stream/);
  const recs = sseRecords(raw.text);
  assert.ok(recs.every((r) => r.object === 'text_completion'));
  assert.equal(recs[recs.length - 1]!.choices[0].finish_reason, 'length');
});

test('stop strings cut the text (finish_reason stop); n gives several choices; echo leads with the prompt', async () => {
  const base = await client.completions.create({ model: MODEL_NAME, prompt: PROMPT, max_tokens: 24, temperature: 0 });
  const full = base.choices[0]!.text;
  const word = full.trim().split(/\s+/)[2]!;
  const cut = await client.completions.create({
    model: MODEL_NAME,
    prompt: PROMPT,
    max_tokens: 24,
    temperature: 0,
    stop: [word],
  });
  assert.equal(cut.choices[0]!.text, full.slice(0, full.indexOf(word)));
  assert.equal(cut.choices[0]!.finish_reason, 'stop');
  const streamed = sseRecords(
    (
      await postJson(`${srv.url}/v1/completions`, {
        model: MODEL_NAME,
        prompt: PROMPT,
        max_tokens: 24,
        temperature: 0,
        stop: word,
        stream: true,
      })
    ).text,
  );
  assert.equal(streamed.map((r) => r.choices[0]?.text ?? '').join(''), cut.choices[0]!.text);

  const multi = await client.completions.create({
    model: 'mixlora',
    prompt: [PROMPT, 'The cat'],
    n: 2,
    max_tokens: 8,
    temperature: 0,
  });
  assert.deepEqual(
    multi.choices.map((c) => c.index),
    [0, 1, 2, 3],
  );
  assert.equal(multi.choices[0]!.text, multi.choices[1]!.text, 'greedy choices agree');
  assert.equal(multi.choices[2]!.text, await referenceCompletion(srv.loaded, dirs.mixlora!, 'The cat', 8));

  const echo = await client.completions.create({
    model: MODEL_NAME,
    prompt: PROMPT,
    max_tokens: 5,
    echo: true,
    temperature: 0,
  });
  assert.ok(echo.choices[0]!.text.startsWith(PROMPT), echo.choices[0]!.text);
});

test('sampling is reproducible per request with a seed, alone or among others; logprobs are reported', async () => {
  const req = { model: 'dora', prompt: PROMPT, max_tokens: 16, temperature: 1, top_p: 0.9, top_k: 50, seed: 1234 };
  const alone = await client.completions.create(req);
  const crowd = await Promise.all([
    client.completions.create(req),
    client.completions.create({ ...req, seed: 99 }),
    client.completions.create({ ...req, model: 'lora' }),
  ]);
  assert.equal(crowd[0]!.choices[0]!.text, alone.choices[0]!.text);
  const other = await Promise.all([1, 2, 3].map((s) => client.completions.create({ ...req, seed: s })));
  assert.ok(new Set(other.map((o) => o.choices[0]!.text)).size > 1, 'different seeds sample differently');

  const lp = await client.completions.create({
    model: MODEL_NAME,
    prompt: PROMPT,
    max_tokens: 6,
    temperature: 0,
    logprobs: 3,
  });
  const l = lp.choices[0]!.logprobs!;
  assert.equal(l.tokens!.length, lp.usage!.completion_tokens);
  for (let i = 0; i < l.tokens!.length; i++) {
    const top = Object.values(l.top_logprobs![i]!);
    assert.equal(top.length, 3);
    // Greedy: the chosen token is the most likely one.
    assert.ok(Math.abs(l.token_logprobs![i]! - Math.max(...top)) < 1e-6);
    assert.ok(l.token_logprobs![i]! <= 0);
  }
});

test('chat: the tokenizer chat template renders the messages; equals `generate --chat`', async () => {
  // A server whose tokenizer has a chat template (tok512.bin's vocabulary, written as tokenizer.json).
  const tokDir = chatTokenizerDir();
  const chat = await startServer({ tokenizerPath: tokDir });
  try {
    const c = new OpenAI({ baseURL: `${chat.url}/v1`, apiKey: 'unused', maxRetries: 0 });
    const r = await c.chat.completions.create({
      model: MODEL_NAME,
      messages: [{ role: 'user', content: 'Tell me a story' }],
      max_tokens: 12,
      temperature: 0,
    });
    assert.equal(r.object, 'chat.completion');
    assert.equal(r.choices[0]!.message.role, 'assistant');
    const cli = mixlora([
      'generate',
      '--model',
      STORIES_BIN,
      '--tokenizer',
      tokDir,
      '--chat',
      '--prompt',
      'Tell me a story',
      '--max-new-tokens',
      '12',
      '--json',
    ]);
    assert.equal(cli.code, 0, cli.stderr);
    assert.equal(r.choices[0]!.message.content, JSON.parse(cli.stdout).completions[0]);
    const rendered = chat.loaded.tokenizer.applyChatTemplate([{ role: 'user', content: 'Tell me a story' }], {
      addGenerationPrompt: true,
    });
    assert.equal(r.usage!.prompt_tokens, chat.loaded.tokenizer.encode(rendered, { special: false }).length);

    const stream = await c.chat.completions.create({
      model: MODEL_NAME,
      messages: [{ role: 'user', content: 'Tell me a story' }],
      max_tokens: 12,
      temperature: 0,
      stream: true,
    });
    let text = '';
    let role = '';
    let finish = '';
    for await (const chunk of stream) {
      assert.equal(chunk.object, 'chat.completion.chunk');
      const d = chunk.choices[0]!;
      role ||= d.delta.role ?? '';
      text += d.delta.content ?? '';
      finish ||= d.finish_reason ?? '';
    }
    assert.equal(role, 'assistant');
    assert.equal(text, r.choices[0]!.message.content);
    assert.equal(finish, r.choices[0]!.finish_reason);
  } finally {
    await chat.close();
  }
  // The main server's tokenizer (tok512.bin) has no template: a clear 400.
  const no = await postJson(`${srv.url}/v1/chat/completions`, {
    model: MODEL_NAME,
    messages: [{ role: 'user', content: 'hi' }],
  });
  assert.equal(no.status, 400);
  assert.equal(no.json.error.param, 'messages');
  assert.match(no.json.error.message, /no chat template/);
});
