// optimizer_in_backward: the optimizer step taken layer by layer inside the recomputed backward pass, each
// layer's gradients freed once applied, gives the weights and losses of the step taken after the pass,
// bit for bit (AdamW, 8-bit AdamW and SGD with momentum; MixLoRA, DoRA and LoRA; fused), and resumes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
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

const env = { MIXLORA_NUM_THREADS: '1' };

function config(data: string, inBackward: boolean): Record<string, unknown> {
  return {
    cutoff_len: 128,
    recompute: true,
    ...(inBackward ? { optimizer_in_backward: true } : {}),
    adapters: [
      {
        name: 'mix',
        data,
        prompt_template: 'none',
        lr: 2e-3,
        batch_size: 4,
        num_epochs: 1,
        scheduler: 'cosine',
        warmup_steps: 1,
        adapter: mixloraAdapter({ lora_dropout: 0.1, router_aux_loss_coef: 0.01 }),
      },
      {
        name: 'dora',
        data,
        prompt_template: 'none',
        optimizer: 'adamw8bit',
        lr: 1e-3,
        weight_decay: 0.01,
        batch_size: 6,
        num_epochs: 1,
        adapter: {
          peft_type: 'LORA',
          r: 64,
          lora_alpha: 16,
          target_modules: ['q_proj', 'gate_proj'],
          use_dora: true,
        },
      },
      {
        name: 'sgd',
        data,
        prompt_template: 'none',
        optimizer: 'sgd',
        momentum: 0.9,
        lr: 1e-2,
        batch_size: 3,
        num_epochs: 1,
        adapter: { peft_type: 'LORA', r: 4, lora_alpha: 8, target_modules: ['v_proj', 'down_proj'] },
      },
    ],
  };
}

test('optimizer_in_backward trains to the same weights and losses, bit for bit, as the step after the pass', () => {
  const data = commonsenseSlice('boolq.train', 12);
  const dirs = [false, true].map((inBackward) => {
    const c = writeConfig(config(data, inBackward));
    const r = mixlora(['train', c.file, '--quiet'], { env });
    assert.equal(r.code, 0, r.stderr);
    return path.join(c.dir, 'run');
  });
  for (const name of ['mix', 'dora', 'sgd']) {
    assert.equal(
      maxDiff(adapterTensors(path.join(dirs[0]!, name)), adapterTensors(path.join(dirs[1]!, name))),
      0,
      `${name}: weights differ`,
    );
  }
  const losses = (dir: string) => readMetrics(dir).map((l) => [l.adapter, l.step, l.loss, l.lr]);
  assert.deepEqual(losses(dirs[1]!), losses(dirs[0]!));
  assert.ok(readMetrics(dirs[1]!).length >= 8, 'too few steps to compare');
});
