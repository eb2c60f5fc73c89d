// Two ranks with packing and early stopping train as one process does: packed micro-batches are dealt to the
// ranks like padded ones (a micro-batch packs the same way wherever it runs), and rank 0's early-stopping
// decision reaches the other rank at the same step.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { mixlora } from '../helpers/cli.js';
import { adapterTensors, commonsenseSlice, maxDiff, mixloraAdapter, writeConfig } from '../helpers/train.js';

function config(data: string, heldOut: string): Record<string, unknown> {
  const common = { data, prompt_template: 'none', batch_size: 4, micro_batch_size: 2, optimizer: 'sgd', lr: 0.05 };
  return {
    cutoff_len: 256,
    eval: { data: heldOut, every: 1, batch_size: 4 },
    adapters: [
      { ...common, name: 'mix', packing: true, num_epochs: 2, adapter: mixloraAdapter({ router_aux_loss_coef: 0.01 }) },
      {
        ...common,
        name: 'lora',
        packing: true,
        num_epochs: 2,
        adapter: { peft_type: 'LORA', r: 4, lora_alpha: 8, lora_dropout: 0, target_modules: ['q_proj', 'v_proj'] },
        // no evaluation after the first improves by 100: stops at its second
        early_stopping: { patience: 1, min_delta: 100 },
      },
    ],
  };
}

const lines = (dir: string) =>
  fs
    .readFileSync(path.join(dir, 'run', 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, unknown>);

test('packing and early stopping on two ranks: the adapters, steps and stop of one process', () => {
  const data = commonsenseSlice('boolq.train', 10);
  const heldOut = commonsenseSlice('boolq.train', 4, 300);
  const alone = writeConfig(config(data, heldOut));
  const one = mixlora(['train', alone.file, '--quiet']);
  assert.equal(one.code, 0, one.stderr);
  const job = writeConfig(config(data, heldOut));
  const two = mixlora(['launch', '--oversubscribe', '--nproc-per-node', '2', 'train', job.file, '--quiet']);
  assert.equal(two.code, 0, two.stderr);
  for (const name of ['mix', 'lora']) {
    const d = maxDiff(
      adapterTensors(path.join(job.dir, 'run', name)),
      adapterTensors(path.join(alone.dir, 'run', name)),
    );
    assert.ok(d <= 1e-6, `${name}: max difference ${d}`);
  }
  const steps = (dir: string, name: string) =>
    lines(dir)
      .filter((l) => l.adapter === name && l.split !== 'eval')
      .map((l) => l.step);
  assert.deepEqual(steps(job.dir, 'lora'), [1, 2], 'lora stopped early');
  assert.deepEqual(steps(job.dir, 'mix'), steps(alone.dir, 'mix'));
  assert.equal(steps(job.dir, 'mix').length, 6);
  const stop = lines(job.dir).find((l) => l.early_stop === true);
  assert.equal(stop?.adapter, 'lora');
  assert.equal(stop?.step, 2);
});
