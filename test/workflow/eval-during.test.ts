// Evaluation while training: held-out loss and task accuracy every N steps and at the end, equal to
// the same quantities computed afterwards by the separate perplexity and `mixlora eval` code paths; the
// best adapter kept in best/<name>; TensorBoard files with the training and eval scalars.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { missingModule, READ_SCALARS, runPython } from '../helpers/python.js';
import { adapterTensors, commonsenseSlice, maxDiff, writeConfig } from '../helpers/train.js';
import { STORIES_BIN, STORIES_TOK } from '../helpers/fixtures.js';
import { readTrainConfig } from '../../src/train/config.js';
import { train } from '../../src/train/trainer.js';
import { loadModel } from '../../src/models/load.js';
import { loadAdapter } from '../../src/adapters/io.js';
import { AdapterBatch } from '../../src/adapters/batch.js';
import { loadExamples } from '../../src/data/examples.js';
import { perplexity } from '../../src/eval/perplexity.js';
import { evaluateTask } from '../../src/eval/scoring.js';
import { bundledData, loadTask } from '../../src/eval/tasks.js';
import { liveTensors } from '../../src/tensor/index.js';

const ALL = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];

test('eval every 2 steps and at the end: metrics.jsonl, best/<name>, eval chart, TensorBoard; values match the eval code paths', async (t) => {
  const heldOut = commonsenseSlice('boolq.train', 5, 200);
  const { file } = writeConfig({
    cutoff_len: 256,
    report_to: ['tensorboard'],
    eval: { data: heldOut, tasks: ['boolq'], limit: 6, every: 2, batch_size: 5, save_best: 'eval_loss' },
    adapters: [
      {
        name: 'lora',
        data: commonsenseSlice('boolq.train', 8),
        adapter: { peft_type: 'LORA', r: 4, lora_alpha: 8, target_modules: ['q_proj', 'v_proj'] },
        batch_size: 2,
        max_steps: 3,
        lr: 0.01,
      },
      {
        name: 'mix',
        data: commonsenseSlice('boolq.train', 8, 50),
        adapter: {
          peft_type: 'MIXLORA',
          r: 2,
          lora_alpha: 4,
          target_modules: ALL,
          routing_strategy: 'mixlora',
          num_experts: 3,
          top_k: 2,
        },
        batch_size: 4,
        micro_batch_size: 2,
        max_steps: 2,
        lr: 0.01,
      },
    ],
  });
  const cfg = readTrainConfig(file);
  const r = await train(cfg);
  const lines = fs
    .readFileSync(r.metricsFile, 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, number | string | boolean>);
  const evals = lines.filter((l) => l.split === 'eval');
  assert.deepEqual(
    evals.map((l) => `${l.adapter}@${l.step}`),
    ['lora@2', 'lora@3', 'mix@2'],
  );
  for (const l of evals) {
    for (const k of ['eval_loss', 'eval_accuracy', 'eval_boolq_accuracy']) assert.equal(typeof l[k], 'number', k);
    assert.equal(l.eval_accuracy, l.eval_boolq_accuracy);
  }
  assert.ok(r.charts.some((c) => c.endsWith('eval.svg')) && fs.existsSync(path.join(cfg.outputDir, 'eval.png')));

  // The final values, recomputed after training by the separate code paths.
  const { model, tokenizer } = loadModel(STORIES_BIN, { tokenizer: STORIES_TOK });
  const task = loadTask('boolq', bundledData('boolq')!, { template: 'alpaca', limit: 6 });
  const examples = loadExamples(heldOut, tokenizer, {
    template: 'alpaca',
    trainOnInputs: false,
    cutoffLen: 256,
    vocabSize: model.config.vocabSize,
  }).examples;
  const check = async (dir: string, line: Record<string, unknown>) => {
    const a = await loadAdapter(dir, model);
    const ppl = perplexity(model, examples, { batchSize: 2, hooks: AdapterBatch.all(a, { training: false }) });
    assert.ok(
      Math.abs(ppl.mean_nll! - (line.eval_loss as number)) < 1e-5,
      `${dir}: ${ppl.mean_nll} vs ${line.eval_loss}`,
    );
    const acc = evaluateTask(model, tokenizer, [{ name: 'x', adapter: a }], task, { method: 'choice', batchSize: 4 });
    assert.equal(acc.results[0]!.accuracy, line.eval_boolq_accuracy);
    a.dispose();
  };
  const last = (name: string) => evals.filter((l) => l.adapter === name).pop()!;
  await check(r.outputs.lora!, last('lora'));
  await check(r.outputs.mix!, last('mix'));
  // best/<name>: the adapter of the eval line with the lowest loss, marked best.
  for (const name of ['lora', 'mix']) {
    const mine = evals.filter((l) => l.adapter === name);
    const bestLine = mine.reduce((b, l) => ((l.eval_loss as number) < (b.eval_loss as number) ? l : b));
    assert.equal(bestLine.best, true);
    await check(path.join(cfg.outputDir, 'best', name), bestLine);
  }
  model.dispose();
  assert.equal(liveTensors(), 0);

  const missing = missingModule('tensorboard');
  if (missing) return t.skip(missing);
  const dirs = ['lora', 'mix'].map((n) => path.join(cfg.outputDir, 'tensorboard', n));
  const tb = JSON.parse(runPython(READ_SCALARS, dirs)) as Record<string, Record<string, [number, number][]>>;
  for (const [i, name] of ['lora', 'mix'].entries()) {
    const s = tb[dirs[i]!]!;
    const train = lines.filter((l) => l.adapter === name && l.split === undefined);
    assert.deepEqual(
      s['train/loss'],
      train.map((l) => [l.step, Math.fround(l.loss as number)]),
    );
    assert.deepEqual(
      s['train/tokens_per_s']!.map((p) => p[0]),
      train.map((l) => l.step),
    );
    assert.ok(s['train/learning_rate']);
    assert.deepEqual(
      s['eval/loss'],
      evals.filter((l) => l.adapter === name).map((l) => [l.step, Math.fround(l.eval_loss as number)]),
    );
    assert.ok(s['eval/boolq_accuracy']);
  }
  assert.ok(tb[dirs[1]!]!['train/aux_loss'], 'MixLoRA reports its aux loss');
});

test('eval blocks are checked: nothing to evaluate, an unknown save_best metric', () => {
  const base = {
    adapters: [
      {
        name: 'a',
        data: commonsenseSlice('boolq.train', 2),
        adapter: { peft_type: 'LORA', r: 2, lora_alpha: 4, target_modules: ['q_proj'] },
      },
    ],
  };
  assert.throws(() => readTrainConfig(writeConfig({ ...base, eval: { every: 2 } }).file), /nothing to evaluate/);
  assert.throws(
    () => readTrainConfig(writeConfig({ ...base, eval: { tasks: ['boolq'], save_best: 'eval_loss' } }).file),
    /save_best.*'eval_loss' is not a metric of this eval block \(eval_accuracy, eval_boolq_accuracy\)/,
  );
  assert.throws(() => readTrainConfig(writeConfig({ ...base, report_to: ['wandb'] }).file), /report_to.*'wandb'/);
});

test('a resumed run (from a middle checkpoint) ends with the eval lines and best adapter of a straight run', async () => {
  const heldOut = commonsenseSlice('boolq.train', 4, 300);
  const config = {
    cutoff_len: 256,
    save_steps: 1,
    eval: { data: heldOut, every: 1, batch_size: 4, save_best: 'eval_loss' },
    adapters: [
      {
        name: 'lora',
        data: commonsenseSlice('boolq.train', 10),
        adapter: { peft_type: 'LORA', r: 4, lora_alpha: 8, target_modules: ['q_proj', 'v_proj', 'down_proj'] },
        batch_size: 2,
        max_steps: 5,
        lr: 0.05,
      },
    ],
  };
  const straight = readTrainConfig(writeConfig(config).file);
  await train(straight);
  const cut = readTrainConfig(writeConfig(config).file);
  await train(cut);
  // As if killed after the second checkpoint: later checkpoints and the final adapter never written.
  const ckpts = path.join(cut.outputDir, 'checkpoints');
  const names = fs.readdirSync(ckpts).sort((a, b) => Number(a.split('-')[1]) - Number(b.split('-')[1]));
  for (const n of names.slice(2)) fs.rmSync(path.join(ckpts, n), { recursive: true });
  fs.rmSync(path.join(cut.outputDir, 'lora'), { recursive: true });
  await train(cut, { resume: true });
  const evalLines = (dir: string) =>
    fs
      .readFileSync(path.join(dir, 'metrics.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((l) => l.split === 'eval');
  const a = evalLines(straight.outputDir);
  assert.equal(a.length, 5);
  assert.ok(
    a.some((l) => l.best !== true),
    'the test wants a step that is not the best',
  );
  assert.deepEqual(evalLines(cut.outputDir), a);
  assert.equal(
    maxDiff(
      adapterTensors(path.join(cut.outputDir, 'best', 'lora')),
      adapterTensors(path.join(straight.outputDir, 'best', 'lora')),
    ),
    0,
  );
});
