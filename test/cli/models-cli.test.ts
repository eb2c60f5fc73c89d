// generate, perplexity and convert from the command line: results on stdout, errors as one line
// naming the problem, exit 1 for bad input and 2 for bad usage.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { mixlora } from '../helpers/cli.js';
import { STORIES_BIN, STORIES_TOK, tempDir } from '../helpers/fixtures.js';

const model = ['--model', STORIES_BIN, '--tokenizer', STORIES_TOK];

test('--help lists the implemented commands; --version prints the version', () => {
  const h = mixlora(['--help']);
  assert.equal(h.code, 0);
  for (const c of ['generate', 'perplexity', 'convert']) assert.match(h.stdout, new RegExp(`\\b${c}\\b`));
  assert.match(mixlora(['--version']).stdout, /^\d+\.\d+\.\d+/);
});

test('an unknown command is bad usage (exit 2, one clear line), with or without --help', () => {
  for (const args of [
    ['frobnicate'],
    ['frobnicate', '--help'],
    ['frobnicate', '-h', '--model', 'x'],
    ['help', 'frobnicate'],
  ]) {
    const r = mixlora(args);
    assert.equal(r.code, 2, args.join(' '));
    assert.equal(r.stdout, '', args.join(' '));
    assert.match(
      r.stderr,
      /^mixlora: unknown command 'frobnicate' \(the commands are train, launch, eval, .*\)\n/,
      args.join(' '),
    );
  }
  assert.equal(mixlora(['help', 'train']).code, 0);
  assert.equal(mixlora(['train', '--help']).code, 0);
});

test('generate prints only the completion', () => {
  const r = mixlora(['generate', ...model, '--prompt', 'Once upon a time', '--max-new-tokens', '32']);
  assert.equal(r.code, 0, r.stderr);
  assert.ok(
    r.stdout.startsWith(', there was a little girl named Lily. She loved to play outside in the park.'),
    r.stdout,
  );
  const j = mixlora([
    'generate',
    ...model,
    '--prompt',
    'Once upon a time',
    '--prompt',
    'Tom',
    '--max-new-tokens',
    '5',
    '--json',
  ]);
  assert.equal(JSON.parse(j.stdout).completions.length, 2);
});

test('perplexity --json: per-example token counts and NLL, token-weighted mean', () => {
  const dir = tempDir();
  const data = path.join(dir, 'd.jsonl');
  fs.writeFileSync(
    data,
    [
      JSON.stringify({ text: 'Once upon a time there was a cat.' }),
      JSON.stringify({ input_ids: [1, 403, 407, 261, 378], labels: [-100, -100, 407, 261, 378] }),
      JSON.stringify({ input_ids: [1, 403] }),
    ].join('\n') + '\n',
  );
  const r = mixlora(['perplexity', ...model, '--data', data, '--json', '--batch-size', '2']);
  assert.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout) as {
    examples: { tokens: number; nll: number }[];
    mean_nll: number;
    perplexity: number;
  };
  assert.deepEqual(
    out.examples.map((e) => e.tokens),
    [10, 3, 1],
  );
  const mean = out.examples.reduce((a, e) => a + e.tokens * e.nll, 0) / 14;
  assert.ok(Math.abs(out.mean_nll - mean) < 1e-9);
  assert.ok(Math.abs(out.perplexity - Math.exp(mean)) < 1e-9);
  // Batching does not change the numbers.
  const one = JSON.parse(mixlora(['perplexity', ...model, '--data', data, '--json', '--batch-size', '1']).stdout);
  assert.ok(Math.abs(one.mean_nll - out.mean_nll) < 1e-5);
});

test('bad input: one clear line and exit 1; bad usage: exit 2', () => {
  const dir = tempDir();
  const bad = path.join(dir, 'bad.jsonl');
  fs.writeFileSync(bad, '{"text": "ok"}\n{"text": 3}\n');
  const r = mixlora(['perplexity', ...model, '--data', bad]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, new RegExp(`${bad}:2: expected "text"`));
  fs.writeFileSync(bad, '{"input_ids": [1, 9999]}\n');
  assert.match(
    mixlora(['perplexity', ...model, '--data', bad]).stderr,
    /:1: "input_ids" holds 9999, outside the vocabulary/,
  );
  fs.writeFileSync(bad, '{"text": "ok"}\nnot json\n');
  assert.match(mixlora(['perplexity', ...model, '--data', bad]).stderr, /:2: not valid JSON/);
  const missing = mixlora(['generate', '--model', path.join(dir, 'nope'), '--prompt', 'x']);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /no such file or folder/);
  assert.equal(mixlora(['generate', ...model, '--prompt', 'x', '--max-new-tokens', 'lots']).code, 2);
  assert.equal(mixlora(['generate', ...model]).code, 2);
  assert.equal(mixlora(['frobnicate']).code, 2);
  assert.equal(mixlora(['generate', '--model', STORIES_BIN, '--prompt', 'x', '--dtype', 'int8']).code, 2);
});

test('convert writes a Hugging Face folder that generate reads; refuses to overwrite without --force', () => {
  const out = path.join(tempDir(), 'hf');
  const r = mixlora(['convert', '--from', 'llama2c', ...model, '--out', out]);
  assert.equal(r.code, 0, r.stderr);
  for (const f of ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json'])
    assert.ok(fs.existsSync(path.join(out, f)), f);
  const g = mixlora(['generate', '--model', out, '--prompt', 'Once upon a time', '--max-new-tokens', '32']);
  assert.ok(g.stdout.startsWith(', there was a little girl named Lily.'), g.stdout);
  assert.equal(mixlora(['convert', '--from', 'llama2c', ...model, '--out', out]).code, 1);
  assert.equal(mixlora(['convert', '--from', 'gguf', ...model, '--out', out]).code, 2);
});
