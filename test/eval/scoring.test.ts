// Scoring on constructed models whose answer is known, both data shapes, --limit, fused = one by one,
// and expert load against an independent count.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { STORIES_BIN, STORIES_TOK, tempDir } from '../helpers/fixtures.js';
import { randomAdapter, TEST_ADAPTER_CONFIGS } from '../helpers/test-adapters.js';
import * as T from '../../src/tensor/index.js';
import { loadModel } from '../../src/models/load.js';
import { llamaConfig, randomModel } from '../../src/models/random.js';
import { TextTokenizer } from '../../src/tokenizer/tokenizer.js';
import { AdapterBatch } from '../../src/adapters/batch.js';
import { loadTask } from '../../src/eval/tasks.js';
import { choiceRow, evaluateTask, loglikRows } from '../../src/eval/scoring.js';
import { expertLoad } from '../../src/eval/expert-load.js';

const tok = TextTokenizer.fromLlama2c(STORIES_TOK, 512);

/** A model whose logits do not depend on the input: every layer outputs 0, every token embeds to e0,
 * and the LM head gives token t the logit bias[t]·√H (rmsnorm(e0) = √H·e0). */
function constantModel(bias: Map<number, number>) {
  const H = 16;
  const m = randomModel(llamaConfig({ vocab: 512, hidden: H, intermediate: 32, layers: 2, heads: 2 }), { seed: 1 });
  T.noGrad(() => {
    for (const l of m.weights.layers) {
      (l.proj.o_proj!.weight as T.Tensor).zero_();
      (l.proj.down_proj!.weight as T.Tensor).zero_();
    }
    m.weights.embed.zero_();
    m.weights.embed.narrow(1, 0, 1).fill_(1);
    m.weights.lmHead.zero_();
    for (const [t, b] of bias) m.weights.lmHead.select(0, t).narrow(0, 0, 1).fill_(b);
  });
  return m;
}

function writeLines(records: unknown[], name = 'd.jsonl'): string {
  const f = path.join(tempDir(), name);
  fs.writeFileSync(f, records.map((r) => JSON.stringify(r)).join('\n') + '\n');
  return f;
}

const boolq = (q: string, answer: 'true' | 'false') => ({
  instruction: `Please answer the following question with true or false, question: ${q}?\n\nAnswer format: true/false`,
  input: '',
  output: `the correct answer is ${answer}`,
  answer,
});

test('choice scoring picks the candidate with the larger logit at the last prompt token', () => {
  const file = writeLines([
    boolq('is the sky blue', 'true'),
    boolq('is snow hot', 'false'),
    boolq('is water wet', 'true'),
    boolq('is fire cold', 'false'),
    boolq('is grass green', 'true'),
  ]);
  const task = loadTask('boolq', file, { template: 'alpaca', limit: null });
  const row = choiceRow(tok, task.items[0]!.choice);
  const [tTrue, tFalse] = row.candidates as [number, number];
  assert.notEqual(tTrue, tFalse);
  for (const [favour, expected] of [
    [tTrue, 3 / 5],
    [tFalse, 2 / 5],
  ] as const) {
    const model = constantModel(
      new Map([
        [tTrue, 0],
        [tFalse, 0],
        [favour, 1],
      ]),
    );
    const { results } = evaluateTask(model, tok, [{ name: 'base', adapter: null }], task, {
      method: 'choice',
      batchSize: 4,
    });
    assert.equal(results[0]!.accuracy, expected);
    model.dispose();
  }
  const limited = loadTask('boolq', file, { template: 'alpaca', limit: 2 });
  assert.equal(limited.items.length, 2);
});

test('loglik scoring: acc and length-normalised acc_norm on multiple-choice JSONL, against hand computation', () => {
  const file = writeLines([
    { query: 'Tom went to the', choices: ['park', 'big red house'], gold: 0 },
    { query: 'The cat sat on the', choices: ['mat', 'very big dog'], gold: 1 },
  ]);
  const task = loadTask('mine', file, { template: 'alpaca', limit: null });
  assert.equal(task.shape, 'multiple-choice');
  // Make one token likely everywhere: log p is computable by hand from the biases.
  const favoured = tok.encode(' big', { special: false })[0]!;
  const model = constantModel(new Map([[favoured, 2]]));
  const lse = Math.log(511 + Math.exp(2 * 4)); // √H = 4
  const { results } = evaluateTask(model, tok, [{ name: 'base', adapter: null }], task, {
    method: 'loglik',
    batchSize: 8,
  });
  let acc = 0;
  let accNorm = 0;
  for (const item of task.items) {
    const rows = loglikRows(tok, item.loglik);
    const scores = rows.map((r) => r.ids.slice(r.from).reduce((s, t) => s + (t === favoured ? 8 : 0) - lse, 0));
    const best = scores.indexOf(Math.max(...scores));
    const norm = scores.map((x, c) => x / rows[c]!.chars);
    if (best === item.gold) acc++;
    if (norm.indexOf(Math.max(...norm)) === item.gold) accNorm++;
  }
  assert.equal(results[0]!.accuracy, acc / 2);
  assert.equal(results[0]!.acc_norm, accNorm / 2);
  model.dispose();
});

test('malformed data is refused naming the file and the first bad record', () => {
  assert.throws(
    () => loadTask('x', writeLines([{ query: 'a', choices: ['b'], gold: 0 }]), { template: 'alpaca', limit: null }),
    /d\.jsonl:1: a multiple-choice record needs/,
  );
  assert.throws(
    () => loadTask('x', writeLines([boolq('a', 'true'), { foo: 1 }]), { template: 'alpaca', limit: null }),
    /d\.jsonl:2: not an LLM-Adapters record/,
  );
  assert.throws(
    () => loadTask('x', writeLines([{ ...boolq('a', 'true'), answer: 'maybe' }]), { template: 'alpaca', limit: null }),
    /answer 'maybe' is not one of the labels true\/false/,
  );
});

test('several adapters in the same fused batches score exactly as one by one; expert load matches an independent count', async () => {
  const { model } = loadModel(STORIES_BIN, { tokenizer: STORIES_TOK });
  const make = (name: string, cfg: Record<string, unknown>) =>
    randomAdapter(name, cfg, model, { seed: name.length, std: 0.2 });
  const mix = make('mix', TEST_ADAPTER_CONFIGS.mixlora);
  const lora = make('lora', TEST_ADAPTER_CONFIGS.lora);
  const targets = [
    { name: 'base', adapter: null },
    { name: 'mix', adapter: mix },
    { name: 'lora', adapter: lora },
  ];
  const file = writeLines([
    boolq('is the sky blue', 'true'),
    boolq('is snow hot', 'false'),
    boolq('do dogs bark', 'true'),
    boolq('is ice warm', 'false'),
    boolq('can birds fly', 'true'),
    boolq('is lead light', 'false'),
  ]);
  const task = loadTask('boolq', file, { template: 'alpaca', limit: null });
  for (const method of ['choice', 'loglik'] as const) {
    const fused = evaluateTask(model, tok, targets, task, { method, batchSize: 7 });
    for (const t of targets) {
      const alone = evaluateTask(model, tok, [t], task, { method, batchSize: 3 });
      assert.deepEqual(
        alone.results[0],
        fused.results.find((r) => r.adapter === t.name),
        `${method} ${t.name}`,
      );
      if (t.adapter?.isMoe) assert.deepEqual(alone.counts.get('mix'), fused.counts.get('mix'));
    }
    if (method !== 'choice') continue;
    // Independent count: route every prompt alone and count top-2 choices from the router probabilities.
    const load = expertLoad(fused.counts.get('mix')!);
    load.fractions.forEach((f) => assert.ok(Math.abs(f.reduce((a, b) => a + b, 0) - 1) < 1e-12));
    const counts = Array.from({ length: 5 }, () => [0, 0, 0, 0]);
    T.noGrad(() =>
      T.tidy(() => {
        for (const item of task.items) {
          const ids = T.tensor([choiceRow(tok, item.choice).ids], { dtype: 'int64' });
          const batch = AdapterBatch.all(mix, { training: false, record: 'loss' });
          model.forward(ids, { hooks: batch });
          for (const rec of batch.routing.get(mix)!) {
            for (const row of rec.probs.topk(2).indices.toList() as number[][])
              for (const e of row) counts[rec.layer]![e]!++;
          }
          batch.dispose();
        }
      }),
    );
    assert.deepEqual(fused.counts.get('mix'), counts);
  }
  mix.dispose();
  lora.dispose();
  model.dispose();
});
