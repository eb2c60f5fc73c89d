// Issue 34, case 3: numbers in configs that are not finite name the field; convert/merge --out refuse a
// file-system root, an input (or a folder holding one) and a folder of someone else's files before
// anything is written; bad --dtype/--quantize/--device values are usage errors (exit 2) on every command.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { mixlora } from '../helpers/cli.js';
import { STORIES_BIN, STORIES_TOK, tempDir } from '../helpers/fixtures.js';
import { commonsenseSlice, writeConfig } from '../helpers/train.js';
import { readTrainConfig } from '../../src/train/config.js';
import { parseAdapterConfig } from '../../src/adapters/config.js';

const env = { MIXLORA_NUM_THREADS: '1' };
const lora = { peft_type: 'LORA', r: 2, lora_alpha: 4, target_modules: ['q_proj'] };

test('1e999, .inf and .nan in a config: the field must be a finite number (not "got null")', () => {
  const data = commonsenseSlice('boolq.train', 2);
  // JSON: 1e999 parses as Infinity (JSON.stringify would show it as null)
  const json = writeConfig({ adapters: [{ name: 'a', data, lr: 12345, adapter: { ...lora, lora_alpha: 6789 } }] });
  fs.writeFileSync(json.file, fs.readFileSync(json.file, 'utf8').replace('6789', '1e999'));
  assert.throws(
    () => readTrainConfig(json.file),
    /train\.json:\d+: adapters\[0\]\.adapter: field 'lora_alpha' must be a finite number, got Infinity$/,
  );
  const cli = mixlora(['train', json.file], { env });
  assert.equal(cli.code, 1);
  assert.match(cli.stderr, /^mixlora: .*field 'lora_alpha' must be a finite number, got Infinity\n$/);
  // YAML: .inf, -.inf and .nan; integers and other numeric fields share the check
  const yaml = path.join(json.dir, 'train.yaml');
  const cases: [string, RegExp][] = [
    ['lr: .inf', /adapters\[0\]: field 'lr' must be a finite number, got Infinity/],
    ['lr: .nan', /adapters\[0\]: field 'lr' must be a finite number, got NaN/],
    ['batch_size: 1e999', /adapters\[0\]: field 'batch_size' must be a finite integer, got Infinity/],
    ['warmup_ratio: -.inf', /adapters\[0\]: field 'warmup_ratio' must be a finite number, got -Infinity/],
  ];
  for (const [line, error] of cases) {
    fs.writeFileSync(
      yaml,
      [
        `base_model: ${STORIES_BIN}`,
        `tokenizer: ${STORIES_TOK}`,
        `output_dir: ${path.join(json.dir, 'run')}`,
        'adapters:',
        '  - name: a',
        `    data: ${data}`,
        `    ${line}`,
        '    adapter: {peft_type: LORA, r: 2, lora_alpha: 4, target_modules: [q_proj]}',
      ].join('\n') + '\n',
    );
    assert.throws(() => readTrainConfig(yaml), error, line);
  }
  // adapter_config.json files (written by other tools) are read the same way
  assert.throws(
    () => parseAdapterConfig({ ...lora, r: Infinity }, 'adapter_config.json'),
    /field 'r' must be a finite integer, got Infinity/,
  );
});

test('convert --out: a file-system root, the input or a parent of it, or a folder of other files is refused before writing', () => {
  const dir = tempDir();
  const inputs = path.join(dir, 'in');
  fs.mkdirSync(inputs);
  const bin = path.join(inputs, 'model.bin');
  const tok = path.join(inputs, 'tok.bin');
  fs.copyFileSync(STORIES_BIN, bin);
  fs.copyFileSync(STORIES_TOK, tok);
  const convert = (out: string, ...extra: string[]) =>
    mixlora(['convert', '--from', 'llama2c', '--model', bin, '--tokenizer', tok, '--out', out, ...extra], { env });
  const snapshot = (d: string) => fs.readdirSync(d).sort();
  const rootBefore = snapshot('/');

  const root = convert('/', '--force');
  assert.equal(root.code, 1);
  assert.equal(
    root.stderr,
    'mixlora: --out /: is a file-system root; give a folder of its own (nothing was changed)\n',
  );
  assert.deepEqual(snapshot('/'), rootBefore);

  for (const [out, what] of [
    [dir, 'contains'],
    [inputs, 'contains'],
    [bin, 'is'],
    [inputs + '/.', 'contains'],
  ] as const) {
    const r = convert(out, '--force');
    assert.equal(r.code, 1, out);
    assert.match(r.stderr, new RegExp(`^mixlora: --out .*: ${what} .*, an input of this command; give a folder`));
    assert.equal(r.stderr.split('\n').length, 2, r.stderr);
  }
  assert.deepEqual(snapshot(inputs), ['model.bin', 'tok.bin']);
  assert.deepEqual(snapshot(dir), ['in']);
  // the adapter folder of --format: refused before it is read
  const adapter = path.join(dir, 'adapter');
  fs.mkdirSync(adapter);
  fs.writeFileSync(path.join(adapter, 'adapter_config.json'), JSON.stringify(lora));
  const same = mixlora(['convert', '--adapter', adapter, '--format', 'bin', '--out', adapter, '--force'], { env });
  assert.equal(same.code, 1);
  assert.match(same.stderr, /--out .*adapter: is .*adapter, an input of this command/);
  assert.deepEqual(snapshot(adapter), ['adapter_config.json']);

  // a folder with a file mixlora did not write: refused naming it, before anything is written beside it
  const mine = path.join(dir, 'mine');
  fs.mkdirSync(mine);
  fs.writeFileSync(path.join(mine, 'notes.txt'), 'mine');
  const foreign = convert(mine, '--force');
  assert.equal(foreign.code, 1);
  assert.match(foreign.stderr, /mine: holds 'notes\.txt', which mixlora did not write; not replacing the folder/);
  assert.deepEqual(snapshot(dir), ['adapter', 'in', 'mine']);
  assert.deepEqual(snapshot(mine), ['notes.txt']);

  // an earlier output is replaced with --force, refused without
  const out = path.join(dir, 'hf');
  assert.equal(convert(out).code, 0);
  const again = convert(out);
  assert.equal(again.code, 1);
  assert.match(again.stderr, /hf: already exists \(use --force to replace it; nothing was changed\)/);
  const forced = convert(out, '--force');
  assert.equal(forced.code, 0, forced.stderr);

  // merge --out: the same checks, before the model is loaded
  const merge = mixlora(
    ['merge', '--model', STORIES_BIN, '--tokenizer', STORIES_TOK, '--adapter', adapter, '--out', '/', '--force'],
    { env },
  );
  assert.equal(merge.code, 1);
  assert.match(merge.stderr, /^mixlora: --out \/: is a file-system root/);
});

test('bad --dtype, --quantize and --device values are usage errors (exit 2) on every command that takes them', () => {
  const model = ['--model', STORIES_BIN, '--tokenizer', STORIES_TOK];
  const commands = [
    ['generate', ...model, '--prompt', 'x'],
    ['perplexity', ...model, '--data', 'd.jsonl'],
    ['eval', ...model, '--task', 'arc-e'],
    ['merge', ...model, '--adapter', 'a', '--out', path.join(tempDir(), 'out')],
    ['serve', ...model],
  ];
  for (const command of commands) {
    for (const [flag, value, error] of [
      ['--dtype', 'int8', /--dtype: 'int8' is not a compute dtype \(float32, bfloat16, float16\)/],
      ['--quantize', 'nf4-dq', /--quantize: 'nf4-dq' is not a quantisation format \(nf4, int8\)/],
      ['--device', 'gpu', /--device: 'gpu' is not cpu, cuda or cuda:N/],
    ] as const) {
      const r = mixlora([...command, flag, value], { env });
      assert.equal(r.code, 2, `${command[0]} ${flag} ${value}: ${r.stderr}`);
      assert.match(r.stderr, error);
    }
  }
  for (const args of [
    ['bench', '--method', 'lora', '--quantize', 'q4'],
    ['bench', '--method', 'lora', '--dtype', 'int8'],
    ['bench', '--method', 'lora', '--device', 'tpu'],
    ['info', '--device', 'tpu'],
  ]) {
    const r = mixlora(args, { env });
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
  }
});
