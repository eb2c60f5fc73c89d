#!/usr/bin/env node
// Builds assets/data/commonsense/ from the LLM-Adapters commonsense sets (../shared/data/commonsense):
// fixed slices (the first N records of each file, in file order), as gzipped JSON Lines. Run once by a
// maintainer; its output is committed. See assets/data/README.md for sources and licences.
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';

const src = process.argv[2] ?? path.resolve('..', 'shared', 'data', 'commonsense');
const out = path.resolve('assets', 'data', 'commonsense');
const TRAIN = 1000;
const TEST = 500;
const files = {
  'arc-e': ['ARC-Easy_train.json', 'ARC-Easy_test.json'],
  'arc-c': ['ARC-Challenge_train.json', 'ARC-Challenge_test.json'],
  boolq: ['boolq_train.json', 'boolq_test.json'],
  obqa: ['openbookqa_train.json', 'openbookqa_test.json'],
  piqa: [null, 'piqa_test.json'],
  siqa: [null, 'social_i_qa_test.json'],
  winogrande: [null, 'winogrande_test.json'],
};
fs.mkdirSync(out, { recursive: true });
for (const [task, [train, test]] of Object.entries(files)) {
  for (const [split, file, n] of [
    ['train', train, TRAIN],
    ['test', test, TEST],
  ]) {
    if (!file) continue;
    const records = JSON.parse(fs.readFileSync(path.join(src, file), 'utf8')).slice(0, n);
    const body = records.map((r) => JSON.stringify(r)).join('\n') + '\n';
    fs.writeFileSync(path.join(out, `${task}.${split}.jsonl.gz`), zlib.gzipSync(body, { level: 9 }));
    console.log(`${task}.${split}: ${records.length} records from ${file}`);
  }
}
