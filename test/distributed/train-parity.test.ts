// Two ranks train the same adapters as one process with the same global batch: the gradients are
// summed in another order (design.md §6.5), so the adapters agree to float precision, not bit for bit.
// AdamW divides each gradient element by its own running magnitude, so an element that nearly cancels
// can move by up to lr per step on float noise: its bound scales with lr × steps (hence a small lr).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { mixlora } from '../helpers/cli.js';
import {
  adapterTensors,
  commonsenseSlice,
  maxDiff,
  mixloraAdapter,
  readMetrics,
  writeConfig,
} from '../helpers/train.js';

/** A LoRA and a MixLoRA adapter trained fused, without dropout or jitter (their masks are drawn per
 * rank); 9 examples in steps of 4, so each epoch ends with a step of one micro-batch, which rank 1 sits out. */
function config(data: string, optimizer: 'sgd' | 'adamw'): Record<string, unknown> {
  const common = { data, prompt_template: 'none', batch_size: 4, micro_batch_size: 1, num_epochs: 2, optimizer };
  return {
    cutoff_len: 128,
    save_steps: 0,
    adapters: [
      {
        ...common,
        name: 'lora',
        lr: optimizer === 'sgd' ? 0.05 : 2e-4,
        max_grad_norm: 1.0,
        adapter: { peft_type: 'LORA', r: 4, lora_alpha: 8, lora_dropout: 0, target_modules: ['q_proj', 'v_proj'] },
      },
      {
        ...common,
        name: 'mix',
        lr: optimizer === 'sgd' ? 0.05 : 2e-4,
        adapter: mixloraAdapter({ router_aux_loss_coef: 0.01 }),
      },
    ],
  };
}

for (const [optimizer, tolerance] of [
  ['sgd', 1e-6],
  ['adamw', 1e-5],
] as const) {
  test(`${optimizer}: two ranks end with the adapters of one process within ${tolerance}`, () => {
    const data = commonsenseSlice('boolq.train', 9);
    const alone = writeConfig(config(data, optimizer));
    const one = mixlora(['train', alone.file, '--quiet']);
    assert.equal(one.code, 0, one.stderr);
    const job = writeConfig(config(data, optimizer));
    const two = mixlora(['launch', '--oversubscribe', '--nproc-per-node', '2', 'train', job.file, '--quiet']);
    assert.equal(two.code, 0, two.stderr);
    assert.match(two.stdout, /\[rank 0\] adapter lora: /);
    assert.doesNotMatch(two.stdout, /\[rank 1\] adapter/, 'only rank 0 reports its outputs');
    for (const name of ['lora', 'mix']) {
      const d = maxDiff(
        adapterTensors(path.join(job.dir, 'run', name)),
        adapterTensors(path.join(alone.dir, 'run', name)),
      );
      assert.ok(d <= tolerance, `${name}: max difference ${d} > ${tolerance}`);
    }
    // One metrics line per step (rank 0 alone writes), with the whole step's tokens and loss.
    const a = readMetrics(path.join(alone.dir, 'run'));
    const b = readMetrics(path.join(job.dir, 'run'));
    assert.equal(b.length, a.length);
    b.forEach((m, i) => {
      assert.equal(m.adapter, a[i]!.adapter);
      assert.equal(m.tokens, a[i]!.tokens);
      assert.ok(Math.abs(m.loss - a[i]!.loss) < 1e-5, `${m.adapter} step ${m.step}: loss ${m.loss} vs ${a[i]!.loss}`);
      assert.equal(m.aux === null, a[i]!.aux === null);
    });
  });
}

test('a batch_size that does not split over the ranks is refused before training, naming both', () => {
  const data = commonsenseSlice('boolq.train', 9);
  const c = config(data, 'sgd');
  (c.adapters as Record<string, unknown>[])[1]!.batch_size = 3;
  const job = writeConfig(c);
  const r = mixlora(['launch', '--oversubscribe', '--nproc-per-node', '2', 'train', job.file, '--quiet']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /adapter 'mix': batch_size 3 is not divisible by micro_batch_size 1 × WORLD_SIZE 2/);
  assert.ok(!fs.existsSync(path.join(job.dir, 'run', 'metrics.jsonl')));
});
