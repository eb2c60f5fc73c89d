// Issue 11, cases 10-12: wrong input is refused with one line naming the file, line, field or tensor
// (never accepted silently), and errors a user can reach say what and where.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { STORIES_BIN, STORIES_TOK, tempDir } from '../helpers/fixtures.js';
import { mixlora } from '../helpers/cli.js';
import { commonsenseSlice, writeConfig } from '../helpers/train.js';
import { readTrainConfig } from '../../src/train/config.js';
import { readConfigFile } from '../../src/util/config-file.js';
import { readText } from '../../src/util/files.js';
import { appendFileChecked } from '../../src/io/atomic.js';
import { readHeader, loadAll, saveSafetensors } from '../../src/io/safetensors.js';
import { loadModel } from '../../src/models/load.js';
import { convertLlama2c } from '../../src/models/convert.js';
import { Adapter } from '../../src/adapters/adapter.js';
import { loadAdapter, saveAdapter } from '../../src/adapters/io.js';
import { parseAdapterConfig } from '../../src/adapters/config.js';
import { readTorchCheckpoint } from '../../src/io/torch-zip.js';
import { TextTokenizer } from '../../src/tokenizer/tokenizer.js';
import * as T from '../../src/tensor/index.js';

const env = { MIXLORA_NUM_THREADS: '1' };

test("case 10: a misspelt key in a training config's adapter block is refused with file, line and key", () => {
  const data = commonsenseSlice('boolq.train', 2);
  const lora = { peft_type: 'LORA', r: 2, lora_alpha: 4, target_modules: ['q_proj'] };
  const c = writeConfig({ adapters: [{ name: 'a', data, adapter: { ...lora, lora_rank: 8 } }] });
  assert.throws(() => readTrainConfig(c.file), /train\.json:\d+: adapters\[0\]\.adapter: unknown field 'lora_rank'/);
  const moe = {
    ...lora,
    peft_type: 'MIXLORA',
    target_modules: ['up_proj'],
    routing_strategy: 'mixlora',
    num_experts: 2,
  };
  const m = writeConfig({ adapters: [{ name: 'a', data, adapter: { ...moe, expert_lora: { r: 2, alpha: 3 } } }] });
  assert.throws(() => readTrainConfig(m.file), /train\.json:\d+: .*expert_lora: unknown field 'alpha'/);
  // adapter_config.json files written by other tools keep their extra keys (PEFT writes many).
  parseAdapterConfig({ ...lora, revision: null, inference_mode: true }, 'adapter_config.json');
});

test('case 11: NaN/Inf or integer weights in a model are refused naming the tensor', () => {
  const dir = path.join(tempDir(), 'hf');
  convertLlama2c(STORIES_BIN, STORIES_TOK, dir);
  const file = path.join(dir, 'model.safetensors');
  const original = fs.readFileSync(file);
  const e = readHeader(file).tensors.get('model.layers.1.mlp.up_proj.weight')!;
  for (const bad of [NaN, Infinity]) {
    const b = Buffer.from(original);
    b.writeFloatLE(bad, e.offset + 4 * 7);
    fs.writeFileSync(file, b);
    assert.throws(
      () => loadModel(dir),
      /model\.safetensors: tensor 'model\.layers\.1\.mlp\.up_proj\.weight' holds NaN or infinite values/,
    );
  }
  // A large but finite value is fine.
  const b = Buffer.from(original);
  b.writeFloatLE(1e6, e.offset);
  fs.writeFileSync(file, b);
  loadModel(dir).model.dispose();
  // Integer weights are refused, not converted.
  fs.writeFileSync(file, original);
  const { tensors } = loadAll(file);
  const norm = 'model.layers.0.input_layernorm.weight';
  tensors.set(
    norm,
    T.tidy(() => tensors.get(norm)!.to('int32').keep()),
  );
  saveSafetensors(file, tensors);
  for (const t of tensors.values()) t.dispose();
  assert.throws(
    () => loadModel(dir),
    /tensor 'model\.layers\.0\.input_layernorm\.weight' is int32; model weights must be floating point/,
  );
});

test('case 11: NaN/Inf or integer weights in an adapter are refused naming the tensor', async () => {
  const { model } = loadModel(STORIES_BIN, { tokenizer: STORIES_TOK });
  const cfg = parseAdapterConfig({ peft_type: 'LORA', r: 2, lora_alpha: 4, target_modules: ['q_proj'] }, 'cfg');
  const a = Adapter.create('a', cfg, model);
  const dir = path.join(tempDir(), 'a');
  saveAdapter(dir, a);
  a.dispose();
  const file = path.join(dir, 'adapter_model.safetensors');
  const { tensors } = loadAll(file);
  const key = [...tensors.keys()].find((k) => k.includes('layers.2') && k.includes('lora_A'))!;
  const orig = tensors.get(key)!;
  for (const bad of [NaN, -Infinity]) {
    tensors.set(
      key,
      T.tidy(() => orig.clone().fill_(bad).keep()),
    );
    saveSafetensors(file, tensors);
    await assert.rejects(
      loadAdapter(dir, model),
      new RegExp(`tensor '${key.replace(/\./g, '\\.')}' holds NaN or infinite values`),
    );
  }
  tensors.set(
    key,
    T.tidy(() => orig.to('int64').keep()),
  );
  saveSafetensors(file, tensors);
  await assert.rejects(loadAdapter(dir, model), /is int64; adapter weights must be floating point/);
  for (const t of tensors.values()) t.dispose();
  orig.dispose();
  model.dispose();
});

test('case 12: bad flags exit 2 with one line: --repetition-penalty 0, --threads 1000, eval without --task', () => {
  const model = ['--model', STORIES_BIN, '--tokenizer', STORIES_TOK];
  for (const [args, msg] of [
    [['generate', ...model, '--prompt', 'x', '--repetition-penalty', '0'], /--repetition-penalty must be a number > 0/],
    [['generate', ...model, '--prompt', 'x', '--threads', '1000'], /--threads must be an integer >= 1 and <= \d+/],
    [['eval', ...model], /--task/],
  ] as [string[], RegExp][]) {
    const r = mixlora(args, { env });
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, msg);
  }
});

test('case 12: perplexity on an empty file is refused; sequences past max_position_embeddings warn once', () => {
  const dir = tempDir();
  const empty = path.join(dir, 'empty.jsonl');
  fs.writeFileSync(empty, '\n');
  const model = ['--model', STORIES_BIN, '--tokenizer', STORIES_TOK];
  const r = mixlora(['perplexity', ...model, '--data', empty], { env });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /empty\.jsonl: no records/);
  const long = path.join(dir, 'long.jsonl');
  const row = JSON.stringify({ input_ids: Array.from({ length: 600 }, (_, i) => 1 + (i % 400)) });
  fs.writeFileSync(long, `${row}\n${row}\n`);
  const p = mixlora(['perplexity', ...model, '--data', long, '--json'], { env });
  assert.equal(p.code, 0, p.stderr);
  // Far past the context (8 x 512 tokens) a record is refused before it is tokenised or run.
  const huge = path.join(dir, 'huge.jsonl');
  fs.writeFileSync(huge, JSON.stringify({ text: 'Once upon a time. '.repeat(1_000_000) }) + '\n');
  const h = mixlora(['perplexity', ...model, '--data', huge], { env });
  assert.equal(h.code, 1, h.stderr);
  assert.match(h.stderr, /huge\.jsonl:1: "text" is longer than 4096 tokens; split it/);
  assert.equal(
    p.stderr.match(
      /warning: 2 example\(s\) of .*long\.jsonl are longer than the model's max_position_embeddings \(512\)/g,
    )?.length,
    1,
  );
});

test('case 12: non-UTF-8 data is refused with file:line; YAML alias bombs name the file', () => {
  const dir = tempDir();
  const data = path.join(dir, 'data.jsonl');
  fs.writeFileSync(
    data,
    Buffer.concat([Buffer.from('{"text": "ok"}\n{"text": "caf'), Buffer.from([0xe9]), Buffer.from('"}\n')]),
  );
  assert.throws(() => readText(data), /data\.jsonl:2: not UTF-8 text/);
  const yaml = path.join(dir, 'train.yaml');
  const lines = ['a: &a [x, x, x, x, x, x, x, x, x, x]'];
  for (let i = 0; i < 12; i++)
    lines.push(
      `${String.fromCharCode(98 + i)}: &${String.fromCharCode(98 + i)} [${Array(10)
        .fill(`*${String.fromCharCode(97 + i)}`)
        .join(', ')}]`,
    );
  fs.writeFileSync(yaml, lines.join('\n') + '\n');
  assert.throws(() => readConfigFile(yaml), /train\.yaml: not usable YAML\/JSON \(.*alias/i);
});

test('case 12: disk full, broken zips and template syntax errors name the file', async () => {
  assert.throws(
    () => appendFileChecked('/dev/full', 'x\n'),
    /^UserError: \/dev\/full: cannot write \(ENOSPC: no space left on the device\)$/,
  );
  const dir = tempDir();
  const bin = path.join(dir, 'adapter_model.bin');
  fs.writeFileSync(bin, Buffer.from('PK\x03\x04 truncated'));
  await assert.rejects(
    readTorchCheckpoint(bin),
    new RegExp(`${bin.replace(/\./g, '\\.')}: not a PyTorch zip checkpoint`),
  );
  const base = TextTokenizer.fromLlama2c(STORIES_TOK, 512);
  const tok = new TextTokenizer(
    base.tokenizerJson,
    { chat_template: '{% for m in messages %}{{ m.content }' },
    '/x/tokenizer.json',
  );
  assert.throws(
    () => tok.applyChatTemplate([{ role: 'user', content: 'hi' }]),
    /^UserError: \/x\/tokenizer\.json: chat_template \(tokenizer_config\.json\): /,
  );
});

test('same class: an adapter config asking for more parameters than 4x the base model is refused before allocating', () => {
  const data = commonsenseSlice('boolq.train', 2);
  const c = writeConfig({
    adapters: [
      { name: 'a', data, adapter: { peft_type: 'LORA', r: 1000000000, lora_alpha: 4, target_modules: ['q_proj'] } },
    ],
  });
  const r = mixlora(['train', c.file, '--quiet'], { env });
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /train\.json: adapter 'a' would have [\d,]+ parameters, more than 4 times its base model's/);
});
