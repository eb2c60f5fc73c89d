// Structured output (src/serve/structured): response_format is checked field by field (400s name the
// field); schemas XGrammar cannot compile or would not enforce are 400s naming
// response_format.json_schema.schema, and such a schema costs only the checker instance; the vocabulary
// adapter gives each token the bytes the tokenizer decodes it to; random walks under the constraint
// (random logits, masked, greedy or seeded sampling) on the LLaMA-2 32k and the stories260K 512-token
// vocabularies end in EOS with text that parses and validates against the schema (ajv); compiled
// grammars are an LRU whose evictions do not disturb running constraints; integer bounds are exact
// (XGrammar's own ranges are not); a schema too costly to compile on a vocabulary is refused naming its
// costliest part and the bound, as are schemas too large or too deep; nothing is left alive.
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, test } from 'node:test';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { ApiError } from '../../src/serve/errors.js';
import {
  compileResponseFormat,
  grammarVocabulary,
  isAllowed,
  liveObjects,
  maskLogits,
  parseResponseFormat,
  releaseGrammarVocabularies,
  tokenBytes,
  type ResponseGrammar,
  type GrammarConstraint,
} from '../../src/serve/structured/index.js';
import { TextTokenizer } from '../../src/tokenizer/tokenizer.js';
import { Rng } from '../../src/util/random.js';
import { ROOT, STORIES_TOK } from '../helpers/fixtures.js';

const TOKENIZERS = [
  {
    name: 'llama2 32k',
    tokenizer: TextTokenizer.fromSentencePiece(
      path.join(ROOT, 'test', 'fixtures', 'llama2-tokenizer', 'tokenizer.model'),
    ),
    vocabSize: 32000,
  },
  { name: 'stories260K 512', tokenizer: TextTokenizer.fromLlama2c(STORIES_TOK, 512), vocabSize: 512 },
];

const SCHEMAS: Record<string, Record<string, unknown>> = {
  person: {
    type: 'object',
    properties: {
      name: { type: 'string', maxLength: 6 },
      age: { type: 'integer', minimum: 0, maximum: 150 },
      role: { enum: ['admin', 'user', 'guest'] },
      address: {
        type: 'object',
        properties: { city: { type: 'string' }, zip: { type: 'string', pattern: '^[0-9]{5}$' } },
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
      scores: { type: 'array', items: { type: 'number' }, minItems: 1, maxItems: 4 },
      tags: { type: 'array', items: { type: 'string', enum: ['red', 'green', 'blue'] } },
      points: {
        type: 'array',
        items: { type: 'object', properties: { x: { type: 'integer' }, y: { type: 'integer' } }, required: ['x', 'y'] },
        maxItems: 3,
      },
      ok: { type: 'boolean' },
    },
    required: ['scores', 'points', 'ok'],
  },
  order: {
    type: 'object',
    properties: {
      kind: { const: 'order' },
      when: { anyOf: [{ type: 'string', format: 'date' }, { type: 'null' }] },
      items: { type: 'array', items: { $ref: '#/$defs/item' }, minItems: 1, maxItems: 3 },
      note: { type: ['string', 'null'] },
    },
    required: ['kind', 'items'],
    $defs: {
      item: {
        type: 'object',
        properties: { id: { type: 'integer' }, label: { type: 'string' }, price: { type: 'number' } },
        required: ['id', 'price'],
      },
    },
  },
};

const ajv = new Ajv2020({ allErrors: true });
ajv.addFormat('date', /^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$/);

after(async () => {
  await releaseGrammarVocabularies();
});

/** The ApiError a call throws, checked to be a 400 naming `param`. */
async function badRequestParam(f: () => unknown, param: string): Promise<ApiError> {
  let error: unknown = null;
  try {
    await f();
  } catch (e) {
    error = e;
  }
  assert.ok(error instanceof ApiError, `expected an ApiError for ${param}, got ${String(error)}`);
  assert.equal(error.status, 400);
  assert.equal(error.param, param, error.message);
  return error;
}

test('response_format: valid values parse; invalid ones are 400s naming the field', async () => {
  assert.equal(parseResponseFormat(undefined), null);
  assert.equal(parseResponseFormat(null), null);
  assert.deepEqual(parseResponseFormat({ type: 'text' }), { type: 'text' });
  assert.deepEqual(parseResponseFormat({ type: 'json_object' }), { type: 'json_object' });
  assert.deepEqual(
    parseResponseFormat({
      type: 'json_schema',
      json_schema: { name: 'a_b-1', schema: { type: 'object' }, strict: true },
    }),
    {
      type: 'json_schema',
      json_schema: { name: 'a_b-1', schema: { type: 'object' }, strict: true, description: null },
    },
  );
  const js = (json_schema: unknown) => ({ type: 'json_schema', json_schema });
  const cases: [unknown, string][] = [
    ['json', 'response_format'],
    [[{ type: 'text' }], 'response_format'],
    [{}, 'response_format.type'],
    [{ type: 'xml' }, 'response_format.type'],
    [{ type: 'text', schema: {} }, 'response_format.schema'],
    [{ type: 'json_object', json_schema: {} }, 'response_format.json_schema'],
    [{ type: 'json_schema' }, 'response_format.json_schema'],
    [js('x'), 'response_format.json_schema'],
    [js({ schema: {} }), 'response_format.json_schema.name'],
    [js({ name: 'has space', schema: {} }), 'response_format.json_schema.name'],
    [js({ name: 'x'.repeat(65), schema: {} }), 'response_format.json_schema.name'],
    [js({ name: 'x' }), 'response_format.json_schema.schema'],
    [js({ name: 'x', schema: [] }), 'response_format.json_schema.schema'],
    [js({ name: 'x', schema: 'object' }), 'response_format.json_schema.schema'],
    [js({ name: 'x', schema: {}, strict: 'yes' }), 'response_format.json_schema.strict'],
    [js({ name: 'x', schema: {}, description: 3 }), 'response_format.json_schema.description'],
    [js({ name: 'x', schema: {}, schemas: {} }), 'response_format.json_schema.schemas'],
  ];
  for (const [value, param] of cases) await badRequestParam(() => parseResponseFormat(value), param);
  // compileResponseFormat checks the same way before compiling anything.
  const { tokenizer, vocabSize } = TOKENIZERS[1]!;
  await badRequestParam(
    () => compileResponseFormat({ type: 'yaml' }, tokenizer, { vocabSize }),
    'response_format.type',
  );
  assert.equal(await compileResponseFormat({ type: 'text' }, tokenizer, { vocabSize }), null);
  assert.equal(await compileResponseFormat(undefined, tokenizer, { vocabSize }), null);
});

test('schemas the engine cannot compile or would not enforce: 400 naming response_format.json_schema.schema', async () => {
  const { tokenizer, vocabSize } = TOKENIZERS[1]!;
  const grammar = await compileResponseFormat({ type: 'json_object' }, tokenizer, { vocabSize });
  const running = grammar!.createConstraint();
  const idOf = (ch: string) =>
    tokenizer.tokenToId(ch) ??
    tokenizer.tokenToId(`<0x${ch.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')}>`)!;
  running.accept(idOf('{'));
  const refused: [Record<string, unknown>, RegExp][] = [
    [{ type: 'foo' }, /Unsupported type "foo"/], // XGrammar aborts (the checker instance is replaced)
    [{ type: 'object', properties: { a: { $ref: '#/$defs/nope' } } }, /nope/],
    [{ type: 'string', pattern: '((' }, /parenthesis/],
    [{ type: 'integer', minimum: 5, maximum: 1 }, /minimum greater than maximum/],
    [{ anyOf: [] }, /"anyOf" is empty/],
    [
      { type: 'object', properties: { a: { type: 'integer', multipleOf: 3 } } },
      /"multipleOf".*properties\.a\.multipleOf/,
    ],
    [{ type: 'number', maximum: 1 }, /"maximum" is supported only with "type": "integer"/],
    [{ type: 'object', properties: { a: { type: 'string' } }, required: ['b'] }, /required property "b"/],
    [{ allOf: [{ type: 'object' }, { required: [] }] }, /allOf/],
    [{ type: 'array', items: { not: { type: 'null' } } }, /"not".*items\.not/],
  ];
  for (const [schema, message] of refused) {
    const e = await badRequestParam(
      () =>
        compileResponseFormat({ type: 'json_schema', json_schema: { name: 'bad', schema } }, tokenizer, { vocabSize }),
      'response_format.json_schema.schema',
    );
    assert.match(e.message, message);
    assert.match(e.message, /^Invalid schema for response_format 'bad': /);
  }
  // The checker's aborts left the main instance alone: the constraint made before goes on, and new
  // schemas compile.
  running.accept(idOf('}'));
  assert.deepEqual(allowedIds(running), [tokenizer.eosId]);
  running.accept(tokenizer.eosId!);
  assert.ok(running.finished);
  running.dispose();
  const ok = await compileResponseFormat(
    { type: 'json_schema', json_schema: { name: 'ok', schema: { type: 'integer', minimum: 0, maximum: 9 } } },
    tokenizer,
    { vocabSize },
  );
  const c = ok!.createConstraint();
  assert.ok(allowedIds(c).includes(idOf('7')));
  c.dispose();
});

test('token bytes: what the tokenizer decodes each token to inside a text', () => {
  for (const { name, tokenizer, vocabSize } of TOKENIZERS) {
    const bytes = tokenBytes(tokenizer, vocabSize);
    assert.equal(bytes.length, vocabSize);
    for (const id of [0, 1, 2]) assert.equal(bytes[id], null, `${name}: special token ${id}`); // unk, bos, eos
    assert.deepEqual([...bytes[tokenizer.tokenToId('<0x0A>')!]!], [10], name);
    const anchor = tokenizer.tokenToId('▁a')!;
    let checked = 0;
    for (let id = 0; id < vocabSize; id += vocabSize > 1000 ? 7 : 1) {
      const b = bytes[id] as Uint8Array | null; // id < vocabSize: an entry, maybe null
      const token = tokenizer.idToToken(id);
      if (b === null) {
        assert.ok(token === null || id < 3, `${name}: ${id} (${token}) has no bytes`);
        continue;
      }
      if (/^<0x[0-9A-F]{2}>$/.test(token!)) {
        assert.deepEqual([...b], [parseInt(token!.slice(3, 5), 16)]);
        continue;
      }
      assert.equal(Buffer.from(b).toString('utf8'), tokenizer.decodeContinuation([anchor], [id]), `${name}: ${id}`);
      checked++;
    }
    assert.ok(checked > (vocabSize > 1000 ? 4000 : 200), `${name}: ${checked} tokens compared`);
  }
  // Ids past the tokenizer's vocabulary (a padded output layer) have no bytes: never allowed. LLaMA-2's
  // pieces that are JavaScript property names (constructor: id 27821) have theirs.
  const { tokenizer } = TOKENIZERS[0]!;
  const padded = tokenBytes(tokenizer, 32008);
  for (let id = 32000; id < 32008; id++) assert.equal(padded[id], null);
  for (const piece of ['constructor', '▁constructor']) {
    const id = tokenizer.tokenToId(piece);
    assert.ok(id !== null, piece);
    assert.equal(Buffer.from(padded[id]!).toString('utf8'), piece.replace('▁', ' '));
  }
});

function allowedIds(c: GrammarConstraint): number[] {
  const mask = c.allowedMask();
  const ids: number[] = [];
  for (let id = 0; id < c.vocabSize; id++) if (isAllowed(mask, id)) ids.push(id);
  return ids;
}

/** Bias towards tokens that close strings (+6) and arrays and objects (+1.5): random logits alone would wander
 * in free strings for thousands of tokens. */
function closingBias(tokenizer: TextTokenizer, vocabSize: number): Float32Array {
  const bias = new Float32Array(vocabSize);
  tokenBytes(tokenizer, vocabSize).forEach((b, id) => {
    const text = b ? Buffer.from(b).toString('latin1') : '';
    bias[id] = text.includes('"') ? 6 : /[}\]]/.test(text) ? 1.5 : 0;
  });
  return bias;
}

const uniform = (rng: Rng) => rng.next() / 2 ** 32;

/** Greedy (argmax) or a draw from softmax(logits), on logits already masked. */
function pick(logits: Float32Array, rng: Rng, greedy: boolean): number {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i]! > logits[best]!) best = i;
  if (greedy) return best;
  const max = logits[best]!;
  let total = 0;
  const p = new Float64Array(logits.length);
  for (let i = 0; i < logits.length; i++) total += p[i] = Math.exp(logits[i]! - max);
  let u = uniform(rng) * total;
  for (let i = 0; i < p.length; i++) if ((u -= p[i]!) <= 0 && p[i]! > 0) return i;
  return best;
}

interface Walk {
  ids: number[];
  text: string;
  finished: boolean;
}

/** Decodes under the constraint as the engine will: mask the row's logits, pick, accept. */
function walk(
  grammar: ResponseGrammar,
  tokenizer: TextTokenizer,
  bias: Float32Array,
  seed: number,
  greedy: boolean,
): Walk {
  const c = grammar.createConstraint();
  const rng = new Rng(seed);
  const V = c.vocabSize;
  const logits = new Float32Array(V);
  const ids: number[] = [];
  const eos = tokenizer.eosId!;
  try {
    while (!c.finished && ids.length < 300) {
      for (let i = 0; i < V; i++) logits[i] = uniform(rng) * 4 + bias[i]!;
      const mask = c.allowedMask();
      maskLogits(logits, mask);
      const id = pick(logits, rng, greedy);
      assert.ok(isAllowed(mask, id) && logits[id]! > -Infinity, `token ${id} picked but not allowed`);
      // Once the value is complete (the schemas are objects: after the closing brace), only EOS is left.
      if (id === eos) assert.deepEqual(allowedIds(c), [eos]);
      c.accept(id);
      ids.push(id);
    }
    return { ids, text: tokenizer.decode(ids), finished: c.finished };
  } finally {
    c.dispose();
  }
}

for (const { name, tokenizer, vocabSize } of TOKENIZERS) {
  test(`random walks under the constraint end in EOS with valid JSON: ${name}`, async () => {
    const bias = closingBias(tokenizer, vocabSize);
    const formats: [string, unknown, Record<string, unknown>][] = [
      ['json_object', { type: 'json_object' }, { type: 'object' }],
      ...Object.entries(SCHEMAS).map(([schemaName, schema]): [string, unknown, Record<string, unknown>] => [
        schemaName,
        { type: 'json_schema', json_schema: { name: schemaName, schema, strict: true } },
        schema,
      ]),
    ];
    for (const [formatName, format, schema] of formats) {
      const grammar = await compileResponseFormat(format, tokenizer, { vocabSize });
      assert.ok(grammar);
      const validate = ajv.compile(schema);
      const texts = new Set<string>();
      for (let seed = 1; seed <= 4; seed++) {
        const w = walk(grammar, tokenizer, bias, seed * 1000 + vocabSize, seed % 2 === 0);
        const where = `${name} ${formatName} seed ${seed}: ${JSON.stringify(w.text)}`;
        assert.ok(w.finished, `did not end within 300 tokens: ${where}`);
        assert.equal(w.ids.at(-1), tokenizer.eosId, where);
        let value: unknown;
        // A walk can write a number past the doubles (90.3e782: valid JSON that parses to Infinity, which
        // no JSON Schema "number" accepts in JavaScript): it stands as the largest double.
        const finite = (_: string, v: unknown) =>
          v === Infinity ? Number.MAX_VALUE : v === -Infinity ? -Number.MAX_VALUE : v;
        assert.doesNotThrow(() => (value = JSON.parse(w.text, finite)), where);
        assert.ok(validate(value), `${where}: ${ajv.errorsText(validate.errors)}`);
        texts.add(w.text);
      }
      assert.ok(texts.size >= 3, `${name} ${formatName}: the walks should differ (${[...texts].join(' | ')})`);
    }
    assert.equal(liveObjects.matchers, 0);
  });
}

test('compiled grammars: an LRU per vocabulary; eviction does not disturb running constraints', async () => {
  const { tokenizer, vocabSize } = TOKENIZERS[1]!;
  const opts = { vocabSize, cacheSize: 2 };
  const schema = (n: number) => ({
    type: 'json_schema',
    json_schema: { name: `s${n}`, schema: { type: 'object', properties: { [`k${n}`]: { type: 'boolean' } } } },
  });
  const vocab = await grammarVocabulary(tokenizer, opts);
  assert.equal(await grammarVocabulary(tokenizer, opts), vocab, 'one vocabulary per tokenizer and options');
  const first = (await compileResponseFormat(schema(1), tokenizer, opts))!;
  const running = first.createConstraint();
  const accept = (c: GrammarConstraint, ids: number[]) => {
    for (const id of ids) {
      assert.ok(isAllowed(c.allowedMask(), id), `${tokenizer.decode(ids)}: ${id}`);
      c.accept(id);
    }
  };
  const text = tokenizer.encode('{"k1": true}', { special: false });
  accept(running, text.slice(0, 2));
  await compileResponseFormat(schema(2), tokenizer, opts);
  await compileResponseFormat(schema(3), tokenizer, opts);
  assert.equal(vocab.cachedGrammars, 2);
  accept(running, text.slice(2));
  assert.deepEqual(allowedIds(running), [tokenizer.eosId]);
  // An evicted grammar compiles again when a row needs it.
  const again = first.createConstraint();
  assert.equal(vocab.cachedGrammars, 2);
  assert.ok(!isAllowed(again.allowedMask(), tokenizer.tokenToId('<0x5B>')!));
  accept(again, tokenizer.encode('{"k1": false}', { special: false }));
  again.accept(tokenizer.eosId!);
  assert.ok(again.finished);
  assert.deepEqual(allowedIds(again), [tokenizer.eosId], 'after EOS, still only EOS');
  assert.throws(() => again.accept(tokenizer.eosId!), /after the structured output ended/);
  assert.throws(() => running.accept(tokenizer.tokenToId('<0x7B>')!), /not allowed/);
  running.dispose();
  again.dispose();
  again.dispose(); // idempotent
  assert.throws(() => again.allowedMask(), /disposed/);
  assert.equal(liveObjects.matchers, 0);
  const before = liveObjects.vocabularies;
  await releaseGrammarVocabularies(tokenizer);
  assert.ok(liveObjects.vocabularies < before);
  // After a release, the next request builds the vocabulary again.
  const fresh = (await compileResponseFormat(schema(1), tokenizer, opts))!;
  assert.notEqual(fresh.vocabulary, vocab);
  await releaseGrammarVocabularies();
  assert.deepEqual(liveObjects, { vocabularies: 0, grammars: 0, matchers: 0 });
});

test('maskLogits sets exactly the disallowed logits to -Infinity', () => {
  const rng = new Rng(3);
  for (const n of [1, 31, 32, 33, 100, 512, 1000]) {
    const mask = new Uint32Array(Math.ceil(n / 32));
    for (let w = 0; w < mask.length; w++) {
      const kind = rng.below(4);
      mask[w] = kind === 0 ? 0 : kind === 1 ? 0xffffffff : rng.next();
    }
    const logits = Float32Array.from({ length: n }, () => uniform(rng));
    const masked = logits.slice();
    maskLogits(masked, mask);
    for (let i = 0; i < n; i++) assert.equal(masked[i], isAllowed(mask, i) ? logits[i] : -Infinity, `n=${n} i=${i}`);
  }
  // Ids past the mask are not allowed.
  const logits = new Float32Array(70).fill(1);
  maskLogits(logits, Uint32Array.of(0xffffffff));
  assert.equal(logits.filter((x) => x === 1).length, 32);
});

/** Whether the constraint takes `text` (its tokens) and then allows EOS: a complete value. */
function takes(grammar: ResponseGrammar, tokenizer: TextTokenizer, text: string): boolean {
  const c = grammar.createConstraint();
  try {
    for (const id of tokenizer.encode(text, { special: false })) {
      if (!isAllowed(c.allowedMask(), id)) return false;
      c.accept(id);
    }
    return isAllowed(c.allowedMask(), tokenizer.eosId!);
  } finally {
    c.dispose();
  }
}

test('integer bounds: exactly the integers in range, where XGrammar alone gets the range wrong', async () => {
  const { tokenizer, vocabSize } = TOKENIZERS[1]!;
  const ranges: [number | null, number | null][] = [
    [0, 120], // XGrammar alone: 121..129 too
    [-120, -7],
    [7, null], // XGrammar alone: 1..6 too
    [-37, null], // XGrammar alone: no negative number
    [null, 123],
    [-3, 1200],
    [100, 250], // right as XGrammar converts it
  ];
  for (const [min, max] of ranges) {
    const schema = {
      type: 'integer',
      ...(min === null ? {} : { minimum: min }),
      ...(max === null ? {} : { maximum: max }),
    };
    const grammar = await compileResponseFormat(
      { type: 'json_schema', json_schema: { name: 'n', schema } },
      tokenizer,
      {
        vocabSize,
      },
    );
    const tried = new Set<number>();
    for (const x of [min ?? 0, max ?? 0, 0, 9, 10, 99, 100, 999, 1000, -9, -10, -99, -100])
      for (let d = -12; d <= 12; d++) tried.add(x + d);
    for (const v of tried)
      assert.equal(
        takes(grammar!, tokenizer, String(v)),
        (min === null || v >= min) && (max === null || v <= max),
        `${JSON.stringify(schema)}: ${v}`,
      );
  }
  // XGrammar gets no unbounded negative maximum right, and it is too large for an enum: refused.
  const e = await badRequestParam(
    () =>
      compileResponseFormat(
        {
          type: 'json_schema',
          json_schema: { name: 'n', schema: { type: 'object', properties: { t: { type: 'integer', maximum: -37 } } } },
        },
        tokenizer,
        { vocabSize },
      ),
    'response_format.json_schema.schema',
  );
  assert.match(e.message, /integer range \[-inf, -37\] wrongly \(at properties\.t\)/);
  assert.equal(liveObjects.matchers, 0);
});

test('compile cost: a schema over the budget is refused naming its costliest part and the bound', async () => {
  const { tokenizer, vocabSize } = TOKENIZERS[0]!;
  const format = (schema: Record<string, unknown>) => ({ type: 'json_schema', json_schema: { name: 'c', schema } });
  const named = (extra: Record<string, unknown>) => ({
    type: 'object',
    properties: { id: { type: 'integer' }, name: { type: 'string', ...extra } },
    required: ['id', 'name'],
  });
  const e = await badRequestParam(
    () => compileResponseFormat(format(named({ maxLength: 100 })), tokenizer, { vocabSize }),
    'response_format.json_schema.schema',
  );
  assert.match(e.message, /32000-token vocabulary would take about \d+ ms, more than the \d+ ms allowed/);
  assert.match(e.message, /maxLength 100 at properties\.name costs about \d+ ms alone/);
  const bound = Number(/maxLength and minLength may be at most (\d+)/.exec(e.message)?.[1]);
  assert.ok(bound >= 4 && bound < 100, e.message);
  // At the bound it compiles (and is cached: the vocabulary holds it); one more is refused.
  const ok = await compileResponseFormat(format(named({ maxLength: bound })), tokenizer, { vocabSize });
  assert.ok(ok!.vocabulary.has(ok!.grammar.key));
  await badRequestParam(
    () => compileResponseFormat(format(named({ maxLength: bound + 1 })), tokenizer, { vocabSize }),
    'response_format.json_schema.schema',
  );
  // A pattern's repetitions count alike; the same schemas cost far less on a 512-token vocabulary.
  const p = await badRequestParam(
    () => compileResponseFormat(format(named({ pattern: '^[^,]{40}$' })), tokenizer, { vocabSize }),
    'response_format.json_schema.schema',
  );
  assert.match(p.message, /pattern "\^\[\^,\]\{40\}\$" at properties\.name/);
  const small = TOKENIZERS[1]!;
  for (const extra of [{ maxLength: 100 }, { pattern: '^[^,]{40}$' }])
    assert.ok(await compileResponseFormat(format(named(extra)), small.tokenizer, { vocabSize: small.vocabSize }));
  // Size and depth are bounded before anything is converted.
  const big = { enum: Array.from({ length: 1500 }, (_, i) => `value ${i}`) };
  const s = await badRequestParam(
    () => compileResponseFormat(format(big), small.tokenizer, { vocabSize: small.vocabSize }),
    'response_format.json_schema.schema',
  );
  assert.match(s.message, /characters of JSON; at most 8192/);
  let deep: Record<string, unknown> = { type: 'integer' };
  for (let i = 0; i < 17; i++) deep = { type: 'array', items: deep };
  const d = await badRequestParam(
    () => compileResponseFormat(format(deep), small.tokenizer, { vocabSize: small.vocabSize }),
    'response_format.json_schema.schema',
  );
  assert.match(d.message, /nested more than 16 levels deep/);
});

/** Every string of printable ASCII the constraint takes to a complete value (at most `limit`), found by
 * walking the allowed single-byte tokens (stories260K's <0xNN> tokens). */
function language(grammar: ResponseGrammar, tokenizer: TextTokenizer, limit: number): string[] {
  const byteId = (b: number) => tokenizer.tokenToId(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`)!;
  const out: string[] = [];
  const visit = (ids: number[], text: string) => {
    if (out.length > limit || ids.length > 40) return;
    const c = grammar.createConstraint();
    const next: [number, string][] = [];
    try {
      for (const id of ids) c.accept(id);
      const mask = c.allowedMask();
      if (isAllowed(mask, tokenizer.eosId!)) out.push(text);
      for (let b = 0x20; b < 0x7f; b++) if (isAllowed(mask, byteId(b))) next.push([byteId(b), String.fromCharCode(b)]);
    } finally {
      c.dispose();
    }
    for (const [id, ch] of next) visit([...ids, id], text + ch);
  };
  visit([], '');
  return [...new Set(out.map((t) => t.replace(/^ /, '')))];
}

test('XGrammar 0.1.27 workarounds: enums exact, bounded strings and patterns stay valid JSON', async () => {
  const { tokenizer, vocabSize } = TOKENIZERS[1]!;
  const compile = async (schema: Record<string, unknown>) =>
    (await compileResponseFormat({ type: 'json_schema', json_schema: { name: 'w', schema } }, tokenizer, {
      vocabSize,
    }))!;
  // Enums: XGrammar alone lets "Februarrch" through for the months, "aba" and "ban" for the words, and for
  // -120..-7 both takes -1000 and loses -119.
  const months = ['January', 'February', 'March', 'April', 'May', 'June', 'July'];
  const words = ['a', 'ab', 'abc', 'b', 'ba', 'bab', 'cat', 'cab', 'can', 'ca'];
  const numbers = [-100, -11, -10, 1, 10, 100, 2.5, null, true];
  for (const values of [months, words, numbers]) {
    const found = language(await compile({ enum: values }), tokenizer, values.length * 3);
    assert.deepEqual(found.sort(), values.map((v) => JSON.stringify(v)).sort());
  }
  // A length-bounded string: no raw control character (XGrammar's class lets a tab through).
  const bounded = await compile({ type: 'string', maxLength: 4 });
  assert.ok(takes(bounded, tokenizer, '"ab c"'));
  assert.ok(!takes(bounded, tokenizer, '"a\tb"'), 'a raw tab is not JSON');
  // Patterns: ".", negated classes and \S take no quotation mark, backslash or control character raw.
  for (const pattern of ['^.{1,3}$', '^[^x]{1,3}$', '^\\S{1,3}$', '^[ -~]{1,3}$']) {
    const g = await compile({ type: 'string', pattern });
    assert.ok(takes(g, tokenizer, '"a}b"'), pattern);
    for (const bad of ['"a"b"', '"a\\b"', '"a\tb"']) assert.ok(!takes(g, tokenizer, bad), `${pattern}: ${bad}`);
  }
  // A class loses what JSON escapes; a pattern that needs such a character is refused.
  const narrowed = await compile({ type: 'string', pattern: '^[a"]$' });
  assert.ok(takes(narrowed, tokenizer, '"a"'));
  assert.ok(!takes(narrowed, tokenizer, '"""'));
  for (const pattern of ['^a"b$', '^["\\\\]$', '^a\\nb$'])
    await badRequestParam(() => compile({ type: 'string', pattern }), 'response_format.json_schema.schema');
  assert.equal(liveObjects.matchers, 0);
});
