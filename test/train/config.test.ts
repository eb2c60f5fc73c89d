// Bad configs and data are refused before training, naming the file, line and field.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { STORIES_BIN, STORIES_TOK, tempDir } from '../helpers/fixtures.js';
import { mixlora } from '../helpers/cli.js';
import { ALL_TARGETS, commonsenseSlice } from '../helpers/train.js';
import { readTrainConfig } from '../../src/train/config.js';
import { lrMultiplier } from '../../src/train/schedule.js';

function yamlConfig(body: string): string {
  const dir = tempDir();
  const file = path.join(dir, 'train.yaml');
  fs.writeFileSync(file, body);
  return file;
}

const data = () => commonsenseSlice('boolq.train', 4);
const head = `base_model: ${STORIES_BIN}\ntokenizer: ${STORIES_TOK}\noutput_dir: run\n`;
const lora = `    adapter: {peft_type: LORA, r: 4, lora_alpha: 8, target_modules: [q_proj]}\n`;

test('config errors name file, line and field', () => {
  const d = data();
  const cases: [string, RegExp][] = [
    [
      `${head}adapters:\n  - name: a\n${lora}    data: ${d}\n    learning_rate: 0.1\n`,
      /train\.yaml:8: adapters\[0\]: unknown field 'learning_rate'/,
    ],
    [
      `${head}adapters:\n  - name: a\n${lora}    data: ${d}\n    lr: fast\n`,
      /train\.yaml:8: adapters\[0\]: field 'lr' must be a number/,
    ],
    [
      `${head}adapters:\n  - name: a\n${lora}    data: missing.json\n`,
      /train\.yaml:7: adapters\[0\]: field 'data' names .*missing\.json, which does not exist/,
    ],
    [
      `${head}adapters:\n  - name: a\n${lora}    data: ${d}\n    batch_size: 4\n    micro_batch_size: 8\n`,
      /field 'micro_batch_size' \(8\) is larger than batch_size \(4\)/,
    ],
    [
      `${head}adapters:\n  - name: a\n    adapter: {peft_type: MIXLORA, r: 4, lora_alpha: 8, target_modules: [gate_proj], routing_strategy: mixlora, num_experts: 0}\n    data: ${d}\n`,
      /train\.yaml:6: adapters\[0\]\.adapter: field 'num_experts' must be >= 1/,
    ],
    [
      `${head}adapters:\n  - name: a\n${lora}    data: ${d}\n  - name: a\n${lora}    data: ${d}\n`,
      /two adapters are named 'a'/,
    ],
    [`${head}seed: -1\nadapters:\n  - name: a\n${lora}    data: ${d}\n`, /train\.yaml:4: field 'seed' must be >= 0/],
    [`${head}adapters: []\n`, /field 'adapters' must be a non-empty list/],
    [
      `${head}optimiser: sgd\nadapters:\n  - name: a\n${lora}    data: ${d}\n`,
      /train\.yaml:4: unknown field 'optimiser'/,
    ],
    [
      `${head}adapters:\n  - name: a\n${lora}    data: ${d}\n    optimizer: adam\n`,
      /field 'optimizer' must be one of adamw, adamw8bit, sgd; got 'adam'/,
    ],
    [
      `${head}optimizer_in_backward: true\nadapters:\n  - name: a\n${lora}    data: ${d}\n`,
      /train\.yaml:4: field 'optimizer_in_backward' needs recompute: true/,
    ],
    [
      `${head}recompute: true\noptimizer_in_backward: true\nadapters:\n  - name: a\n${lora}    data: ${d}\n    batch_size: 4\n    micro_batch_size: 2\n`,
      /field 'optimizer_in_backward' needs one micro-batch per step: adapter 'a' has micro_batch_size 2 < batch_size 4/,
    ],
    [
      `${head}recompute: true\noptimizer_in_backward: true\nadapters:\n  - name: a\n${lora}    data: ${d}\n    max_grad_norm: 1\n`,
      /field 'optimizer_in_backward' cannot clip gradients: adapter 'a' sets max_grad_norm/,
    ],
    [`${head}adapters: [\n`, /train\.yaml:\d+: not valid YAML\/JSON/],
  ];
  for (const [body, re] of cases) assert.throws(() => readTrainConfig(yamlConfig(body)), re, re.source);
});

test('bad data is refused before training starts, naming file and line', () => {
  const dir = tempDir();
  const bad = path.join(dir, 'bad.jsonl');
  fs.writeFileSync(bad, '{"instruction": "a", "output": "b"}\n{"instruction": "a", "output": "b"\n');
  const cfg = path.join(dir, 'train.json');
  fs.writeFileSync(
    cfg,
    JSON.stringify({
      base_model: STORIES_BIN,
      tokenizer: STORIES_TOK,
      output_dir: path.join(dir, 'run'),
      adapters: [
        { name: 'a', data: bad, adapter: { peft_type: 'LORA', r: 4, lora_alpha: 8, target_modules: ALL_TARGETS } },
      ],
    }),
  );
  const r = mixlora(['train', cfg]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /bad\.jsonl:2: not valid JSON/);
  assert.ok(!fs.existsSync(path.join(dir, 'run', 'metrics.jsonl')), 'training started');
  fs.writeFileSync(bad, '{"question": "a"}\n');
  assert.match(mixlora(['train', cfg]).stderr, /bad\.jsonl:1: unrecognised record/);
  fs.writeFileSync(bad, '{"input_ids": [1, 2, 600]}\n');
  assert.match(mixlora(['train', cfg]).stderr, /bad\.jsonl:1: "input_ids" holds 600, outside the vocabulary/);
});

test('learning-rate schedules follow Hugging Face (warm-up, linear, cosine)', () => {
  assert.equal(lrMultiplier('constant', 0, 10, 2), 0);
  assert.equal(lrMultiplier('constant', 1, 10, 2), 0.5);
  assert.equal(lrMultiplier('constant', 5, 10, 2), 1);
  assert.equal(lrMultiplier('linear', 2, 10, 2), 1);
  assert.equal(lrMultiplier('linear', 6, 10, 2), 0.5);
  assert.equal(lrMultiplier('linear', 10, 10, 2), 0);
  assert.ok(Math.abs(lrMultiplier('cosine', 6, 10, 2) - 0.5) < 1e-12);
  assert.ok(Math.abs(lrMultiplier('cosine', 4, 10, 2) - 0.5 * (1 + Math.cos(Math.PI / 4))) < 1e-12);
});
