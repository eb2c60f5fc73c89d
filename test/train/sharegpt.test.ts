// ShareGPT conversations ({conversations: [{from, value}]}) train exactly as the same conversation written as
// {messages}: LLaMA-Factory's tags (human/gpt/system/function_call/observation) or a data block's own
// columns/tags; broken conversations are refused naming file, line and field.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { STORIES_BIN, STORIES_TOK, tempDir } from '../helpers/fixtures.js';
import { TextTokenizer } from '../../src/tokenizer/tokenizer.js';
import { IGNORE_INDEX, loadExamples } from '../../src/data/examples.js';
import { SHAREGPT_DEFAULTS } from '../../src/data/sharegpt.js';
import { readTrainConfig } from '../../src/train/config.js';

const base = TextTokenizer.fromLlama2c(STORIES_TOK, 512);
const tok = new TextTokenizer(
  base.tokenizerJson,
  {
    ...base.config,
    chat_template:
      "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}",
  },
  'chat',
);
const opts = { template: 'alpaca', trainOnInputs: false, cutoffLen: 512, vocabSize: 512 };

function file(lines: unknown[], name = 'd.jsonl'): string {
  const f = path.join(tempDir(), name);
  fs.writeFileSync(f, lines.map((l) => JSON.stringify(l)).join('\n') + '\n');
  return f;
}

const scoredText = (ex: { labels: number[] }) => tok.decode(ex.labels.filter((l) => l !== IGNORE_INDEX));

test('ShareGPT records equal the same conversation as {messages}: system, user and assistant turns', () => {
  const sharegpt = {
    conversations: [
      { from: 'system', value: 'Be brief' },
      { from: 'human', value: 'Hi there' },
      { from: 'gpt', value: 'Hello friend' },
      { from: 'human', value: 'Bye' },
      { from: 'gpt', value: 'See you' },
    ],
  };
  const messages = {
    messages: [
      { role: 'system', content: 'Be brief' },
      { role: 'user', content: 'Hi there' },
      { role: 'assistant', content: 'Hello friend' },
      { role: 'user', content: 'Bye' },
      { role: 'assistant', content: 'See you' },
    ],
  };
  const [a, b] = loadExamples(file([sharegpt, messages]), tok, opts).examples;
  assert.deepEqual(a, b);
  assert.equal(
    tok.decode(a!.inputIds),
    '<system>Be brief\n<user>Hi there\n<assistant>Hello friend\n<user>Bye\n<assistant>See you\n',
  );
  assert.match(scoredText(a!), /^\s*Hello friend\s+See you\s*$/);
  // train_on_inputs scores everything, as for {messages}
  const all = loadExamples(file([sharegpt]), tok, { ...opts, trainOnInputs: true }).examples[0]!;
  assert.deepEqual(all.labels, all.inputIds);
});

test('function_call turns are scored (rendered as assistant turns), observations are not (tool turns)', () => {
  const { examples } = loadExamples(
    file([
      {
        conversations: [
          { from: 'human', value: 'Weather in Paris?' },
          { from: 'function_call', value: '{"name": "weather", "arguments": {"city": "Paris"}}' },
          { from: 'observation', value: '{"temp": 21}' },
          { from: 'gpt', value: 'It is 21 degrees.' },
        ],
      },
    ]),
    tok,
    opts,
  );
  const ex = examples[0]!;
  assert.equal(
    tok.decode(ex.inputIds),
    '<user>Weather in Paris?\n<assistant>{"name": "weather", "arguments": {"city": "Paris"}}\n<tool>{"temp": 21}\n<assistant>It is 21 degrees.\n',
  );
  const scored = scoredText(ex);
  assert.match(scored, /"weather"/);
  assert.match(scored, /It is 21 degrees\./);
  assert.doesNotMatch(scored, /temp|Paris\?/);
});

test('a data block maps other columns and tags (OpenAI-style role/content, a system column)', () => {
  const f = file([
    {
      dialog: [
        { role: 'user', content: 'Hi there' },
        { role: 'assistant', content: 'Hello friend' },
      ],
      sys: 'Be brief',
    },
  ]);
  const format = {
    ...SHAREGPT_DEFAULTS,
    messages: 'dialog',
    system: 'sys',
    roleTag: 'role',
    contentTag: 'content',
    userTag: 'user',
    assistantTag: 'assistant',
  };
  const ex = loadExamples(f, tok, { ...opts, sharegpt: format }).examples[0]!;
  assert.equal(tok.decode(ex.inputIds), '<system>Be brief\n<user>Hi there\n<assistant>Hello friend\n');
  assert.match(scoredText(ex), /^\s*Hello friend\s*$/);

  // The same mapping written in a training config (LLaMA-Factory's dataset_info keys).
  const dir = tempDir();
  const cfgFile = path.join(dir, 'train.yaml');
  const entry = (data: string) =>
    `base_model: ${STORIES_BIN}\ntokenizer: ${STORIES_TOK}\noutput_dir: run\nadapters:\n  - name: a\n` +
    `    adapter: {peft_type: LORA, r: 4, lora_alpha: 8, target_modules: [q_proj]}\n${data}`;
  fs.writeFileSync(
    cfgFile,
    entry(
      `    data:\n      - ${f}\n      - file_name: ${f}\n        formatting: sharegpt\n` +
        `        columns: {messages: dialog, system: sys}\n` +
        `        tags: {role_tag: role, content_tag: content, user_tag: user, assistant_tag: assistant}\n`,
    ),
  );
  const cfg = readTrainConfig(cfgFile);
  assert.deepEqual(cfg.adapters[0]!.data, [f, f]);
  assert.deepEqual(cfg.adapters[0]!.dataFormats, [null, format]);
  // A config without data blocks has no dataFormats key (its digest, and so its checkpoints, are unchanged).
  fs.writeFileSync(cfgFile, entry(`    data: ${f}\n`));
  assert.ok(!('dataFormats' in readTrainConfig(cfgFile).adapters[0]!));

  const bad: [string, RegExp][] = [
    [
      `    data:\n      - file: ${f}\n        tags: {role: role}\n`,
      /train\.yaml:9: adapters\[0\]\.data\[0\]\.tags: unknown field 'role'/,
    ],
    [
      `    data:\n      - file: ${f}\n        columns: {messages: dialog, tools: tools}\n`,
      /train\.yaml:9: adapters\[0\]\.data\[0\]\.columns: field 'tools' is not supported/,
    ],
    [`    data: {file: ${f}, formatting: alpaca}\n`, /field 'formatting' must be one of sharegpt; got 'alpaca'/],
    [`    data: {file: ${f}, tags: {user_tag: gpt}}\n`, /field 'tags' give 'gpt' to two roles/],
    [`    data: {columns: {messages: dialog}}\n`, /adapters\[0\]\.data: field 'file' is required/],
    [`    data: {file: ${f}, file_name: ${f}}\n`, /field 'file_name' and file both given/],
    [`    data: {file: ${f}, split: train}\n`, /adapters\[0\]\.data: unknown field 'split'/],
    [`    data: {file: missing.json}\n`, /field 'data' names .*missing\.json, which does not exist/],
  ];
  for (const [data, re] of bad) {
    fs.writeFileSync(cfgFile, entry(data));
    assert.throws(() => readTrainConfig(cfgFile), re, re.source);
  }
});

test('broken conversations are refused naming file, line and field', () => {
  const conv = (turns: unknown) => ({ conversations: turns });
  const cases: [unknown, RegExp][] = [
    [conv([]), /d\.jsonl:2: "conversations" must be a non-empty list of \{from, value\} turns/],
    [conv('hi'), /d\.jsonl:2: "conversations" must be a non-empty list/],
    [conv([{ from: 'human', value: 'a' }, 'b']), /d\.jsonl:2: "conversations\[1\]" must be an object/],
    [conv([{ from: 'human', value: 3 }]), /d\.jsonl:2: "conversations\[0\]\.value" must be a string/],
    [conv([{ value: 'a' }]), /d\.jsonl:2: "conversations\[0\]\.from" must be a string/],
    [
      conv([
        { from: 'human', value: 'a' },
        { from: 'human', value: 'b' },
      ]),
      /d\.jsonl:2: "conversations\[1\]\.from" is 'human' where an assistant-side turn \('gpt' or 'function_call'\) belongs: turns alternate/,
    ],
    [
      conv([
        { from: 'user', value: 'a' },
        { from: 'gpt', value: 'b' },
      ]),
      /"conversations\[0\]\.from" is 'user' .* none of the role tags \(human, observation, gpt, function_call, system\); map it with tags/,
    ],
    [
      conv([
        { from: 'human', value: 'a' },
        { from: 'gpt', value: 'b' },
        { from: 'human', value: 'c' },
      ]),
      /d\.jsonl:2: "conversations" ends with a user-side turn/,
    ],
    [
      conv([
        { from: 'human', value: 'a' },
        { from: 'system', value: 'b' },
      ]),
      /"conversations\[1\]\.from" is 'system' where an assistant-side turn .* \(a system turn only first\)/,
    ],
    [conv([{ from: 'system', value: 'a' }]), /"conversations" holds a system turn and nothing else/],
    [
      {
        conversations: [
          { from: 'human', value: 'a' },
          { from: 'gpt', value: 'b' },
        ],
        system: 1,
      },
      null as unknown as RegExp,
    ],
  ];
  const good = conv([
    { from: 'human', value: 'a' },
    { from: 'gpt', value: 'b' },
  ]);
  for (const [record, re] of cases) {
    if (re === null) {
      // without a `system` column in the mapping, a record's `system` key is not read (as LLaMA-Factory)
      assert.equal(loadExamples(file([good, record]), tok, opts).examples.length, 2);
      continue;
    }
    assert.throws(() => loadExamples(file([good, record]), tok, opts), re, re.source);
  }
  const withSystem = { ...SHAREGPT_DEFAULTS, system: 'system' };
  assert.throws(
    () => loadExamples(file([{ ...good, system: 1 }]), tok, { ...opts, sharegpt: withSystem }),
    /d\.jsonl:1: "system" \(the system column\) must be a string/,
  );
  // Without a chat template the tokenizer cannot render it.
  assert.throws(
    () => loadExamples(file([good]), base, opts),
    /d\.jsonl:1: ShareGPT data needs a tokenizer with a chat_template/,
  );
});
