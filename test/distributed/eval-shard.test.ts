// `mixlora eval` under the launcher: each rank scores a block of the items, rank 0 prints the table one
// process prints (and the per-item samples in the same order).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { STORIES_BIN, STORIES_TOK, tempDir } from '../helpers/fixtures.js';
import { mixlora } from '../helpers/cli.js';
import { shardRange } from '../../src/eval/sharded.js';

test('shardRange covers every item once, in order, in blocks that differ by at most one', () => {
  for (const [n, w] of [
    [7, 2],
    [1, 3],
    [10, 4],
  ] as const) {
    const blocks = Array.from({ length: w }, (_, r) => shardRange(n, r, w));
    assert.equal(blocks[0]![0], 0);
    assert.equal(blocks[w - 1]![1], n);
    for (let r = 1; r < w; r++) assert.equal(blocks[r]![0], blocks[r - 1]![1]);
    const sizes = blocks.map(([a, b]) => b - a);
    assert.ok(Math.max(...sizes) - Math.min(...sizes) <= 1);
  }
});

test('two ranks give the table and samples of one process', () => {
  const dir = tempDir();
  const args = (samples: string) => [
    'eval',
    '--model',
    STORIES_BIN,
    '--tokenizer',
    STORIES_TOK,
    '--task',
    'arc-e',
    '--task',
    'boolq',
    '--limit',
    '7',
    '--batch-size',
    '4',
    '--scoring',
    'loglik',
    '--json',
    '--samples',
    samples,
  ];
  const one = mixlora(args(path.join(dir, 'one.jsonl')));
  assert.equal(one.code, 0, one.stderr);
  const two = mixlora(['launch', '--oversubscribe', '--nproc-per-node', '2', ...args(path.join(dir, 'two.jsonl'))]);
  assert.equal(two.code, 0, two.stderr);
  const lines = two.stdout.trim().split('\n');
  assert.equal(lines.length, 1, 'rank 0 alone prints');
  assert.deepEqual(JSON.parse(lines[0]!.replace(/^\[rank 0\] /, '')), JSON.parse(one.stdout));
  const samples = (f: string) =>
    fs
      .readFileSync(path.join(dir, f), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { task: string; item: number; pred: number; scores: number[] });
  const a = samples('one.jsonl');
  const b = samples('two.jsonl');
  assert.equal(b.length, a.length);
  b.forEach((s, i) => {
    assert.equal(`${s.task}/${s.item}/${s.pred}`, `${a[i]!.task}/${a[i]!.item}/${a[i]!.pred}`);
    s.scores.forEach((x, k) => assert.ok(Math.abs(x - a[i]!.scores[k]!) < 1e-4));
  });
});
