// Structured output through `mixlora serve`, end to end: response_format on /v1/completions and
// /v1/chat/completions, on stories260K (512 tokens) and on a tiny random LLaMA with the real LLaMA-2
// 32000-token tokenizer, with and without adapters. Three schemas (nested objects, arrays, enums, numbers,
// required fields) × 30 prompts, greedy and seeded sampling, sent concurrently so that rows of different
// schemas, adapters and unconstrained rows share decode steps: every output parses and validates (ajv)
// and ends with finish_reason 'stop'; no matcher is left alive and the live tensor count is back where it
// was. Also: json_object on chat; 400s naming the field for bad values, unknown fields, schemas that cannot
// be enforced and schemas too costly to compile; unconstrained rows beside constrained ones still equal
// `generate`; and in the engine, a finished constraint ends its row under ignore_eos while a constraint
// that throws fails only its own row.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import { Ajv2020 } from 'ajv/dist/2020.js';
import * as T from '../../src/tensor/index.js';
import { saveSafetensors } from '../../src/io/safetensors.js';
import { loadModel } from '../../src/models/load.js';
import { TextTokenizer } from '../../src/tokenizer/tokenizer.js';
import { Engine, type FinishReason, type SequenceSpec } from '../../src/serve/engine.js';
import { ServerMetrics } from '../../src/serve/metrics.js';
import type { TokenConstraint } from '../../src/serve/sampling.js';
import { liveObjects, releaseGrammarVocabularies } from '../../src/serve/structured/index.js';
import { ROOT, STORIES_BIN, STORIES_TOK, tempDir } from '../helpers/fixtures.js';
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

const LLAMA2_TOKENIZER = path.join(ROOT, 'test', 'fixtures', 'llama2-tokenizer', 'tokenizer.model');
const ADAPTERS = ['lora', 'dora', 'mixlora'];
const MODELS = [MODEL_NAME, ...ADAPTERS];

// Every value these schemas allow is bounded (strings by maxLength, integers by their range, numbers from
// an enum, arrays by maxItems), so that any model's output ends: a string or number a model never closes
// would run to max_tokens. They stay within what one compilation may cost on a 32000-token vocabulary.
const SCHEMAS: Record<string, Record<string, unknown>> = {
  person: {
    type: 'object',
    properties: {
      name: { type: 'string', maxLength: 6 },
      age: { type: 'integer', minimum: 0, maximum: 120 },
      role: { enum: ['admin', 'user', 'guest'] },
      address: {
        type: 'object',
        properties: { city: { type: 'string', maxLength: 4 }, zip: { type: 'string', pattern: '^[0-9]{5}$' } },
        required: ['city', 'zip'],
        additionalProperties: false,
      },
    },
    required: ['name', 'age', 'role', 'address'],
    additionalProperties: false,
  },
  measurements: {
    type: 'object',
    properties: {
      scores: { type: 'array', items: { enum: [0.5, 1, 2.25, -3, 1e3] }, minItems: 1, maxItems: 3 },
      tags: { type: 'array', items: { enum: ['red', 'green', 'blue'] }, maxItems: 2 },
      points: {
        type: 'array',
        items: {
          type: 'object',
          properties: {
            x: { type: 'integer', minimum: -9, maximum: 9 },
            y: { type: 'integer', minimum: 0, maximum: 99 },
          },
          required: ['x', 'y'],
          additionalProperties: false,
        },
        maxItems: 2,
      },
      ok: { type: 'boolean' },
    },
    required: ['scores', 'points', 'ok'],
    additionalProperties: false,
  },
  order: {
    type: 'object',
    properties: {
      kind: { const: 'order' },
      items: { type: 'array', items: { $ref: '#/$defs/item' }, minItems: 1, maxItems: 2 },
      note: { anyOf: [{ type: 'string', maxLength: 4 }, { type: 'null' }] },
    },
    required: ['kind', 'items', 'note'],
    additionalProperties: false,
    $defs: {
      item: {
        type: 'object',
        properties: {
          id: { type: 'integer', minimum: 1, maximum: 999 },
          size: { enum: ['S', 'M', 'L'] },
          price: { enum: [9.99, 19.5, 100] },
        },
        required: ['id', 'price'],
        additionalProperties: false,
      },
    },
  },
};

const PROMPTS = [
  'Once upon a time',
  'The little dog',
  'Tom and Sue went to',
  'A big red ball',
  'Lily liked to',
  'The sun was',
  'One day, a cat',
  'Mom said',
  'The bird flew',
  'There was a tree',
  'Ben had a toy',
  'The fish swam',
  'It was raining',
  'The girl saw',
  'A small boy',
  'The park was',
  'Sara and her dad',
  'The car went',
  'In the garden',
  'The old man',
  'The cake was',
  'A bunny hopped',
  'The sky turned',
  'They played with',
  'The moon',
  'A frog jumped',
  'The box had',
  'Max the dog',
  'At night,',
  'The teacher said',
];

const ajv = new Ajv2020({ allErrors: true });
const validators = Object.fromEntries(Object.entries(SCHEMAS).map(([name, schema]) => [name, ajv.compile(schema)]));

/** A Hugging Face folder: a random 2-layer LLaMA (hidden size 64) with the LLaMA-2 32000-token
 * SentencePiece tokenizer and a chat template. Loads in well under a second. */
function tinyLlama32k(): string {
  const dir = tempDir('mixlora-llama32k-');
  const H = 64;
  const I = 128;
  const V = 32000;
  const config = {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    vocab_size: V,
    hidden_size: H,
    intermediate_size: I,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 4,
    max_position_embeddings: 512,
    rms_norm_eps: 1e-5,
    rope_theta: 10000,
    hidden_act: 'silu',
    tie_word_embeddings: true,
    bos_token_id: 1,
    eos_token_id: 2,
  };
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config, null, 1));
  T.manualSeed(32000);
  const weights = new Map<string, T.Tensor>();
  T.tidy(() => {
    const randn = (shape: number[], std: number) => T.randn(shape).mul(std).keep();
    weights.set('model.embed_tokens.weight', randn([V, H], 0.4));
    for (let l = 0; l < 2; l++) {
      const p = `model.layers.${l}`;
      weights.set(`${p}.input_layernorm.weight`, T.ones([H]).keep());
      for (const n of ['q_proj', 'k_proj', 'v_proj', 'o_proj'])
        weights.set(`${p}.self_attn.${n}.weight`, randn([H, H], 1 / Math.sqrt(H)));
      weights.set(`${p}.mlp.gate_proj.weight`, randn([I, H], 1 / Math.sqrt(H)));
      weights.set(`${p}.mlp.up_proj.weight`, randn([I, H], 1 / Math.sqrt(H)));
      weights.set(`${p}.mlp.down_proj.weight`, randn([H, I], 1 / Math.sqrt(I)));
      weights.set(`${p}.post_attention_layernorm.weight`, T.ones([H]).keep());
    }
    weights.set('model.norm.weight', T.ones([H]).keep());
  });
  saveSafetensors(path.join(dir, 'model.safetensors'), weights, { format: 'pt' });
  for (const w of weights.values()) w.dispose();
  const tok = TextTokenizer.fromSentencePiece(LLAMA2_TOKENIZER);
  fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(tok.tokenizerJson));
  const template =
    "{{ bos_token }}{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\\n' }}{% endfor %}" +
    "{% if add_generation_prompt %}{{ 'assistant:' }}{% endif %}";
  fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify({ ...tok.config, chat_template: template }));
  return dir;
}

interface Served {
  name: string;
  srv: Running;
  adapterDirs: Record<string, string>;
}

type Which = 'stories260K' | 'llama 32k';
let llamaDir: string | null = null;

/** A server for `which` with the three adapters (stories260K with a chat template). */
async function serveWithAdapters(which: Which): Promise<Served> {
  const o =
    which === 'stories260K' ? { tokenizerPath: chatTokenizerDir() } : { modelPath: (llamaDir ??= tinyLlama32k()) };
  const loaded = o.modelPath ? loadModel(o.modelPath) : loadModel(STORIES_BIN, { tokenizer: STORIES_TOK });
  const adapterDirs = writeAdapters(tempDir(`mixlora-structured-${which.replace(' ', '-')}-`), loaded.model);
  loaded.model.dispose();
  const srv = await startServer({ ...o, adapters: Object.entries(adapterDirs), maxBatch: 16 });
  return { name: which, srv, adapterDirs };
}

/** Closes a server and frees its tokenizer's grammar vocabularies: what server.shutdown is to do
 * (src/serve/server.ts calls releaseGrammarVocabularies). */
async function closeServed(served: Served | undefined): Promise<void> {
  if (!served) return;
  await served.srv.close();
  await releaseGrammarVocabularies(served.srv.loaded.tokenizer);
}

// Servers the smaller tests share, started on first use (after the large tests, which each run a server
// of their own: the live tensor count is the process's, and an idle server frees its KV caches after 30 s).
let stories: Served;
let llama: Served;
async function shared(): Promise<[Served, Served]> {
  stories ??= await serveWithAdapters('stories260K');
  llama ??= await serveWithAdapters('llama 32k');
  return [stories, llama];
}

after(async () => {
  await closeServed(stories);
  await closeServed(llama);
  assert.deepEqual(liveObjects, { vocabularies: 0, grammars: 0, matchers: 0 }, 'no grammar object is left alive');
});

const jsonSchema = (name: string) => ({
  type: 'json_schema',
  json_schema: { name, schema: SCHEMAS[name]!, strict: true },
});

interface Answer {
  status: number;
  text: string;
  finish: string | null;
  body: string;
}

/** One request, its text and finish reason (streamed or not, chat or completions). */
async function ask(url: string, route: 'chat' | 'completions', body: Record<string, unknown>): Promise<Answer> {
  const r = await postJson(`${url}/v1/${route === 'chat' ? 'chat/completions' : 'completions'}`, body);
  if (r.status !== 200) return { status: r.status, text: '', finish: null, body: r.text };
  if (body.stream === true) {
    const records = sseRecords(r.text);
    const error = records.find((c) => c.error);
    if (error) return { status: 500, text: '', finish: null, body: JSON.stringify(error) };
    const pieces = records.map((c) =>
      route === 'chat' ? (c.choices[0]?.delta?.content ?? '') : (c.choices[0]?.text ?? ''),
    );
    const finish = records.map((c) => c.choices[0]?.finish_reason).find((f) => f != null) ?? null;
    return { status: 200, text: pieces.join(''), finish, body: r.text };
  }
  const c = r.json.choices[0];
  return { status: 200, text: route === 'chat' ? c.message.content : c.text, finish: c.finish_reason, body: r.text };
}

/** Runs `jobs` over `workers` concurrent clients (rows share the engine's steps); the answers in order. */
async function runConcurrently<J>(jobs: J[], workers: number, run: (job: J) => Promise<Answer>): Promise<Answer[]> {
  const answers: Answer[] = new Array(jobs.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: workers }, async () => {
      while (next < jobs.length) {
        const i = next++;
        answers[i] = await run(jobs[i]!);
      }
    }),
  );
  return answers;
}

function checkValid(schemaName: string, a: Answer, where: string): unknown {
  assert.equal(a.status, 200, `${where}: ${a.body.slice(0, 300)}`);
  assert.equal(a.finish, 'stop', `${where}: did not complete: ${JSON.stringify(a.text)}`);
  let value: unknown;
  assert.doesNotThrow(() => (value = JSON.parse(a.text)), `${where}: not JSON: ${JSON.stringify(a.text)}`);
  const validate = validators[schemaName]!;
  assert.ok(validate(value), `${where}: ${JSON.stringify(a.text)}: ${ajv.errorsText(validate.errors)}`);
  return value;
}

for (const which of ['stories260K', 'llama 32k'] as const) {
  test(`3 schemas × 30 prompts, greedy and sampled, mixed adapters, concurrent: every output valid (${which})`, async () => {
    const served = await serveWithAdapters(which);
    try {
      await bigRun(which, served.srv);
    } finally {
      await closeServed(served);
    }
    assert.deepEqual(liveObjects, { vocabularies: 0, grammars: 0, matchers: 0 });
  });
}

/** The large run on one server: every output valid, nothing left behind. */
async function bigRun(which: Which, srv: Running): Promise<void> {
  // Warm up (KV caches, the grammar vocabulary, the compiled schemas), then count.
  for (const name of Object.keys(SCHEMAS)) {
    const a = await ask(srv.url, 'completions', {
      model: MODEL_NAME,
      prompt: 'Hi',
      max_tokens: 200,
      temperature: 0,
      response_format: jsonSchema(name),
    });
    checkValid(name, a, `warm-up ${name}`);
  }
  const live = T.liveTensors();
  srv.server.ctx.engine.peakBatch = 0;
  const jobs = Object.keys(SCHEMAS).flatMap((schema, s) =>
    PROMPTS.flatMap((prompt, p) =>
      [0, 1].map((temperature) => {
        const i = (s * PROMPTS.length + p) * 2 + temperature;
        return {
          schema,
          prompt,
          temperature,
          seed: temperature > 0 ? 1000 + i : null,
          model: MODELS[(p + s) % MODELS.length]!,
          route: (i % 3 === 1 ? 'chat' : 'completions') as 'chat' | 'completions',
          stream: i % 4 === 0,
        };
      }),
    ),
  );
  // Interleave the schemas so that each step holds rows of all three (and of every adapter).
  const order = jobs.map((_, i) => i).sort((a, b) => (a % 60) - (b % 60) || a - b);
  const answers = await runConcurrently(
    order.map((i) => jobs[i]!),
    16,
    (j) =>
      ask(srv.url, j.route, {
        model: j.model,
        ...(j.route === 'chat' ? { messages: [{ role: 'user', content: j.prompt }] } : { prompt: j.prompt }),
        max_tokens: 300,
        temperature: j.temperature,
        seed: j.seed,
        stream: j.stream,
        response_format: jsonSchema(j.schema),
      }),
  );
  const texts = new Map<string, Set<string>>();
  order.forEach((i, k) => {
    const j = jobs[i]!;
    checkValid(j.schema, answers[k]!, `${which} ${j.schema} ${j.model} ${j.route} T=${j.temperature} "${j.prompt}"`);
    const key = `${j.schema} T=${j.temperature}`;
    if (!texts.has(key)) texts.set(key, new Set());
    texts.get(key)!.add(answers[k]!.text);
  });
  // The outputs follow the model, not one fixed text per schema.
  for (const [key, set] of texts) assert.ok(set.size >= 3, `${which} ${key}: only ${set.size} distinct outputs`);
  const engine = srv.server.ctx.engine;
  assert.ok(engine.peakBatch >= 8, `requests shared steps (peak batch ${engine.peakBatch})`);
  assert.equal(engine.batchSize, 0);
  assert.equal(liveObjects.matchers, 0, 'every row freed its matcher');
  assert.equal(T.liveTensors(), live, 'the live tensor count is where it started');
}

test('greedy constrained output is the same alone and in a batch of other schemas and adapters', async () => {
  for (const { srv, name } of await shared()) {
    const body = (prompt: string, schema: string, model: string) => ({
      model,
      prompt,
      max_tokens: 300,
      temperature: 0,
      response_format: jsonSchema(schema),
    });
    const cases = PROMPTS.slice(0, 6).map((prompt, i) => ({
      prompt,
      schema: Object.keys(SCHEMAS)[i % 3]!,
      model: MODELS[i % MODELS.length]!,
    }));
    const alone: string[] = [];
    for (const c of cases) alone.push((await ask(srv.url, 'completions', body(c.prompt, c.schema, c.model))).text);
    const together = await Promise.all(
      cases.map((c) => ask(srv.url, 'completions', body(c.prompt, c.schema, c.model))),
    );
    cases.forEach((c, i) => {
      checkValid(c.schema, together[i]!, `${name} ${c.schema} ${c.model}`);
      assert.equal(together[i]!.text, alone[i], `${name} ${c.schema} ${c.model} "${c.prompt}"`);
    });
  }
});

test('unconstrained rows beside constrained ones still equal generate (greedy)', async () => {
  const [{ srv, adapterDirs }] = await shared();
  const plain = PROMPTS.slice(0, 8).map((prompt, i) => ({ prompt, model: MODELS[i % MODELS.length]! }));
  const expected = await Promise.all(
    plain.map((p) =>
      referenceCompletion(srv.loaded, p.model === MODEL_NAME ? null : adapterDirs[p.model]!, p.prompt, 40),
    ),
  );
  srv.server.ctx.engine.peakBatch = 0;
  const constrained = PROMPTS.slice(8, 16).map((prompt, i) =>
    ask(srv.url, 'completions', {
      model: MODELS[(i + 1) % MODELS.length]!,
      prompt,
      max_tokens: 300,
      temperature: i % 2,
      seed: i,
      response_format: i % 4 === 3 ? { type: 'text' } : jsonSchema(Object.keys(SCHEMAS)[i % 3]!),
    }),
  );
  const unconstrained = plain.map((p, i) =>
    ask(srv.url, i % 2 ? 'completions' : 'completions', {
      model: p.model,
      prompt: p.prompt,
      max_tokens: 40,
      temperature: 0,
      stream: i % 2 === 1,
    }),
  );
  const [c, u] = await Promise.all([Promise.all(constrained), Promise.all(unconstrained)]);
  u.forEach((a, i) => assert.equal(a.text, expected[i], `unconstrained ${plain[i]!.model} "${plain[i]!.prompt}"`));
  c.forEach((a, i) => {
    if (i % 4 === 3) assert.equal(a.status, 200);
    else checkValid(Object.keys(SCHEMAS)[i % 3]!, a, `constrained ${i}`);
  });
  assert.ok(srv.server.ctx.engine.peakBatch >= 8, `rows shared steps (peak ${srv.server.ctx.engine.peakBatch})`);
});

test('json_object on chat completions (an object, streamed or not); n choices of a schema', async () => {
  for (const { srv, name } of await shared()) {
    const tok = srv.loaded.tokenizer;
    // A small random model would write a key for hundreds of tokens: a bias towards closing quotes and
    // braces (applied before the grammar's mask, as OpenAI's logit_bias is) lets it finish.
    const bias: Record<string, number> = {};
    for (let id = 3; id < srv.loaded.model.config.vocabSize; id++) {
      const t = tok.decode([id]);
      if (/^ ?"$/.test(t)) bias[String(id)] = 25;
      if (/^ ?\}$/.test(t)) bias[String(id)] = 20;
    }
    for (const stream of [false, true])
      for (const temperature of [0, 1]) {
        const a = await ask(srv.url, 'chat', {
          model: MODEL_NAME,
          messages: [{ role: 'user', content: 'Describe a cat as JSON.' }],
          max_tokens: 100,
          temperature,
          seed: 3,
          stream,
          logit_bias: bias,
          response_format: { type: 'json_object' },
        });
        const where = `${name} stream=${stream} T=${temperature}: ${JSON.stringify(a.text)}`;
        assert.equal(a.status, 200, `${where} ${a.body.slice(0, 300)}`);
        assert.equal(a.finish, 'stop', where);
        const value: unknown = JSON.parse(a.text);
        assert.ok(typeof value === 'object' && value !== null && !Array.isArray(value), where);
      }
    // Cut by max_tokens: finish_reason 'length', the text a prefix of an object.
    const cut = await ask(srv.url, 'chat', {
      model: MODEL_NAME,
      messages: [{ role: 'user', content: 'Describe a cat as JSON.' }],
      max_tokens: 3,
      temperature: 0,
      response_format: { type: 'json_object' },
    });
    assert.equal(cut.finish, 'length');
    assert.match(cut.text, /^ ?\{/);
    // n choices: a constraint each.
    const r = await postJson(`${srv.url}/v1/completions`, {
      model: MODEL_NAME,
      prompt: 'Once upon a time',
      n: 3,
      max_tokens: 300,
      seed: 5,
      response_format: jsonSchema('order'),
    });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.choices.length, 3);
    for (const c of r.json.choices as { text: string; finish_reason: string }[])
      checkValid('order', { status: 200, text: c.text, finish: c.finish_reason, body: r.text }, `${name} n=3`);
  }
  assert.equal(liveObjects.matchers, 0);
});

test('bad response_format values: 400s naming the field', async () => {
  const [{ srv }] = await shared();
  const post = (route: string, response_format: unknown) =>
    postJson(`${srv.url}/v1/${route}`, {
      model: MODEL_NAME,
      ...(route === 'completions' ? { prompt: 'Hi' } : { messages: [{ role: 'user', content: 'Hi' }] }),
      response_format,
    });
  const cases: [unknown, string, RegExp][] = [
    ['json', 'response_format', /response_format/],
    [{ type: 'xml' }, 'response_format.type', /"text", "json_object", "json_schema"/],
    [{ type: 'json_object', schema: {} }, 'response_format.schema', /unknown field/],
    [
      { type: 'json_schema', json_schema: { name: 'x', schema: {}, schemas: {} } },
      'response_format.json_schema.schemas',
      /unknown field/,
    ],
    [{ type: 'json_schema', json_schema: { name: 'x' } }, 'response_format.json_schema.schema', /required/],
    [
      { type: 'json_schema', json_schema: { name: 'bad', schema: { type: 'foo' } } },
      'response_format.json_schema.schema',
      /^Invalid schema for response_format 'bad': .*foo/,
    ],
    [
      {
        type: 'json_schema',
        json_schema: { name: 'bad', schema: { type: 'array', items: { not: { type: 'null' } } } },
      },
      'response_format.json_schema.schema',
      /"not" is not supported \(at items\.not\)/,
    ],
    [
      {
        type: 'json_schema',
        json_schema: { name: 'big', schema: { enum: Array.from({ length: 2000 }, (_, i) => `v${i}`) } },
      },
      'response_format.json_schema.schema',
      /characters of JSON; at most 8192/,
    ],
  ];
  for (const route of ['completions', 'chat/completions'])
    for (const [value, param, message] of cases) {
      const r = await post(route, value);
      assert.equal(r.status, 400, `${route} ${JSON.stringify(value).slice(0, 80)}: ${r.text}`);
      assert.equal(r.json.error.param, param, r.text);
      assert.equal(r.json.error.type, 'invalid_request_error');
      assert.match(r.json.error.message, message);
    }
});

test('a schema too costly to compile on a 32000-token vocabulary: a 400 naming the keyword and the bound', async () => {
  const [stories, { srv }] = await shared();
  const deep = { type: 'object', properties: { name: { type: 'string', maxLength: 200 } }, required: ['name'] };
  const r = await postJson(`${srv.url}/v1/completions`, {
    model: MODEL_NAME,
    prompt: 'Hi',
    response_format: { type: 'json_schema', json_schema: { name: 'costly', schema: deep } },
  });
  assert.equal(r.status, 400, r.text);
  assert.equal(r.json.error.param, 'response_format.json_schema.schema');
  assert.match(
    r.json.error.message,
    /^Invalid schema for response_format 'costly': compiling it for this model's 32000-token vocabulary/,
  );
  assert.match(r.json.error.message, /maxLength 200 at properties\.name/);
  const bound = Number(/maxLength and minLength may be at most (\d+)/.exec(r.json.error.message)?.[1]);
  assert.ok(bound >= 4 && bound < 200, r.json.error.message);
  // At the bound it compiles and runs; the same schema on the 512-token vocabulary costs far less.
  deep.properties.name.maxLength = bound;
  const ok = await ask(srv.url, 'completions', {
    model: MODEL_NAME,
    prompt: 'Hi',
    max_tokens: 100,
    response_format: { type: 'json_schema', json_schema: { name: 'bound', schema: deep } },
  });
  assert.equal(ok.status, 200, ok.body);
  assert.equal(ok.finish, 'stop');
  deep.properties.name.maxLength = 200;
  const small = await ask(stories.srv.url, 'completions', {
    model: MODEL_NAME,
    prompt: 'Hi',
    max_tokens: 300,
    response_format: { type: 'json_schema', json_schema: { name: 'costly', schema: deep } },
  });
  assert.equal(small.status, 200, small.body);
});

// ---- the engine with constraints of its own --------------------------------------------------------

/** Allows only `script`'s tokens in order, then reports finished (after its last one). */
class ScriptConstraint implements TokenConstraint {
  private at = 0;
  disposed = 0;

  constructor(
    private readonly script: number[],
    private readonly throwAt: number | null = null,
  ) {}

  mask(logits: Float32Array): void {
    const next = this.script[this.at];
    for (let i = 0; i < logits.length; i++) if (i !== next) logits[i] = -Infinity;
  }

  accept(id: number): void {
    if (this.at === this.throwAt) throw new Error(`constraint refused token ${id}`);
    if (this.finished) throw new Error('accept after the end');
    assert.equal(id, this.script[this.at]);
    this.at++;
  }

  get finished(): boolean {
    return this.at === this.script.length;
  }

  dispose(): void {
    this.disposed++;
  }
}

test('engine: a finished constraint ends its row (ignore_eos too); one that throws fails only its row', async () => {
  const { model, tokenizer } = loadModel(STORIES_BIN, { tokenizer: STORIES_TOK });
  const engine = new Engine(model, { maxBatch: 8, maxQueue: 8, stopIds: [2], metrics: new ServerMetrics() });
  const run = (constraint: TokenConstraint | null, ignoreEos: boolean, maxTokens = 20) =>
    new Promise<{ ids: number[]; reason: FinishReason; error?: Error }>((resolve) => {
      const ids: number[] = [];
      const spec: SequenceSpec = {
        prompt: tokenizer.encode('Once upon a time'),
        maxTokens,
        constraint,
        modelName: 'base',
        adapter: null,
        sampling: { temperature: 0, topP: null, topK: null, seed: null, logprobs: null, ignoreEos },
        sink: {
          onToken: (c) => (ids.push(c.id), false),
          onFinish: (reason, error) => resolve({ ids, reason, error }),
        },
      };
      engine.submit([spec]);
    });
  const script = [65, 66, 67, 2];
  const finishing = new ScriptConstraint(script);
  const throwing = new ScriptConstraint(script, 2);
  const ending = new ScriptConstraint([70, 71]); // finished without EOS
  const [a, b, c, d, e] = await Promise.all([
    run(finishing, true),
    run(throwing, false),
    run(null, false),
    run(ending, false),
    run(null, true, 12),
  ]);
  assert.deepEqual(a.ids, script, 'the constraint chose every token');
  assert.equal(a.reason, 'stop', 'ignore_eos: the finished grammar still ended the row');
  assert.equal(b.reason, 'abort');
  assert.match(b.error!.message, /constraint refused token 67/);
  assert.deepEqual(b.ids, [65, 66], 'the tokens before the failure were delivered');
  assert.equal(c.reason, 'length');
  assert.equal(c.ids.length, 20);
  assert.deepEqual(d.ids, [70, 71]);
  assert.equal(d.reason, 'stop');
  assert.equal(e.ids.length, 12, 'the unconstrained ignore_eos row runs to max_tokens');
  for (const x of [finishing, throwing, ending]) assert.equal(x.disposed, 1, 'each constraint disposed once');
  // A constraint whose mask throws fails its row at once; an engine refusal leaves it to the caller.
  const broken: TokenConstraint = {
    mask: () => {
      throw new Error('mask failed');
    },
    accept: () => undefined,
    finished: false,
    dispose: () => undefined,
  };
  const [f, g] = await Promise.all([run(broken, false), run(null, false, 5)]);
  assert.equal(f.reason, 'abort');
  assert.match(f.error!.message, /mask failed/);
  assert.equal(g.ids.length, 5);
  await engine.shutdown(1000);
  model.dispose();
});
