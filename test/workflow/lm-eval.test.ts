// `mixlora eval --scoring loglik` against lm-evaluation-harness: the same multiple-choice items scored
// with lm_eval's HFLM.loglikelihood over the same model (stories260K converted to a Hugging Face
// folder, float32, add_bos_token=True as lm_eval is run for Llama models): the same choice for every
// item and each choice's log-likelihood within 1e-4.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { mixlora } from '../helpers/cli.js';
import { STORIES_BIN, STORIES_TOK, tempDir } from '../helpers/fixtures.js';
import { missingModule, runPython } from '../helpers/python.js';
import { convertLlama2c } from '../../src/models/convert.js';

const ITEMS = [
  { query: 'Once upon a time, there was a little', choices: ['girl', 'dog named Max', 'car'], gold: 0 },
  { query: 'Lily liked to play in the', choices: ['park', 'sky with her friends', 'moon'], gold: 0 },
  { query: 'Tom was very happy because he got a new', choices: ['toy', 'big red ball', 'house', 'idea'], gold: 0 },
  { query: 'The sun was shining and the birds were', choices: ['singing', 'sad', 'blue'], gold: 0 },
  { query: 'Mom said, "Be careful!" and Lily', choices: ['smiled', 'ran away fast', 'said no'], gold: 1 },
  { query: 'One day, a little boy named Tim went to the', choices: ['store', 'park to play', 'tree'], gold: 1 },
  { query: 'She was scared, so she hugged her', choices: ['mom', 'teddy bear', 'cat'], gold: 2 },
  { query: 'They played together all day and had lots of', choices: ['fun', 'cake', 'friends'], gold: 0 },
];

const LM_EVAL = `
import sys, json
from lm_eval.models.huggingface import HFLM
from lm_eval.api.instance import Instance
lm = HFLM(pretrained=sys.argv[1], device="cpu", dtype="float32", batch_size=4, add_bos_token=True)
items = [json.loads(l) for l in open(sys.argv[2])]
reqs = [Instance(request_type="loglikelihood", doc=it, arguments=(it["query"], " " + c), idx=j)
        for it in items for j, c in enumerate(it["choices"])]
res = lm.loglikelihood(reqs)
out, k = [], 0
for it in items:
    out.append([r[0] for r in res[k:k + len(it["choices"])]])
    k += len(it["choices"])
print(json.dumps(out))
`;

test('loglik scores match lm-evaluation-harness (same choice, log-likelihoods within 1e-4)', (t) => {
  const missing = missingModule('lm_eval.models.huggingface');
  if (missing) return t.skip(missing);
  const dir = tempDir();
  const hf = path.join(dir, 'stories260K-hf');
  convertLlama2c(STORIES_BIN, STORIES_TOK, hf);
  const data = path.join(dir, 'items.jsonl');
  fs.writeFileSync(data, ITEMS.map((i) => JSON.stringify(i)).join('\n') + '\n');
  const samples = path.join(dir, 'samples.jsonl');
  const r = mixlora([
    'eval',
    '--model',
    hf,
    '--task',
    'stories-mc',
    '--data',
    data,
    '--scoring',
    'loglik',
    '--batch-size',
    '5',
    '--samples',
    samples,
  ]);
  assert.equal(r.code, 0, r.stderr);
  const ours = fs
    .readFileSync(samples, 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { item: number; scores: number[]; pred: number });
  const theirs = JSON.parse(
    runPython(LM_EVAL, [hf, data], { env: { HF_HUB_OFFLINE: '1', TOKENIZERS_PARALLELISM: 'false' } }),
  ) as number[][];
  assert.equal(ours.length, ITEMS.length);
  let worst = 0;
  ours.forEach((o, i) => {
    assert.equal(o.item, i);
    const ref = theirs[i]!;
    assert.equal(o.scores.length, ref.length);
    assert.equal(o.pred, ref.indexOf(Math.max(...ref)), `item ${i}: lm_eval picks another choice`);
    o.scores.forEach((s, c) => (worst = Math.max(worst, Math.abs(s - ref[c]!))));
  });
  assert.ok(worst < 1e-4, `largest log-likelihood difference ${worst}`);
});
