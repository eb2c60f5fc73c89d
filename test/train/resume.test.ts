// A run killed with SIGKILL after a checkpoint, then resumed with --resume, ends with the same weights
// as a run never interrupted; and on a small real task the loss goes down.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { mixlora, spawnMixlora } from '../helpers/cli.js';
import {
  ALL_TARGETS,
  adapterTensors,
  checkpointWritten,
  commonsenseSlice,
  maxDiff,
  mixloraAdapter,
  readMetrics,
  writeConfig,
} from '../helpers/train.js';

const env = { MIXLORA_NUM_THREADS: '1' };

function config(data: string): Record<string, unknown> {
  return {
    cutoff_len: 256,
    save_steps: 4,
    adapters: [
      {
        name: 'mix',
        data,
        prompt_template: 'none',
        lr: 2e-3,
        batch_size: 4,
        micro_batch_size: 2,
        num_epochs: 2,
        scheduler: 'cosine',
        warmup_ratio: 0.1,
        adapter: mixloraAdapter({ lora_dropout: 0.1, router_aux_loss_coef: 0.01, jitter_noise: 0.02 }),
      },
      {
        name: 'dora',
        data,
        prompt_template: 'none',
        lr: 1e-3,
        batch_size: 8,
        micro_batch_size: 4,
        num_epochs: 2,
        max_grad_norm: 1.0,
        adapter: {
          peft_type: 'LORA',
          r: 8,
          lora_alpha: 16,
          lora_dropout: 0.05,
          target_modules: ['q_proj', 'v_proj', 'gate_proj'],
          use_dora: true,
        },
      },
    ],
  };
}

test('SIGKILL after a checkpoint, then --resume, ends with the weights of an uninterrupted run', async () => {
  const data = commonsenseSlice('boolq.train', 48);
  const straight = writeConfig(config(data));
  const r = mixlora(['train', straight.file, '--quiet'], { env });
  assert.equal(r.code, 0, r.stderr);

  const killed = writeConfig(config(data));
  const run = path.join(killed.dir, 'run');
  const job = spawnMixlora(['train', killed.file, '--quiet'], { env: { ...process.env, ...env }, limitMs: 600_000 });
  await checkpointWritten(run, job.child);
  job.child.kill('SIGKILL');
  await job.exit;
  assert.ok(!fs.existsSync(path.join(run, 'mix', 'adapter_model.safetensors')), 'the killed run had already finished');
  const resumed = mixlora(['train', killed.file, '--resume', '--quiet'], { env });
  assert.equal(resumed.code, 0, resumed.stderr);
  for (const name of ['mix', 'dora']) {
    assert.equal(
      maxDiff(adapterTensors(path.join(run, name)), adapterTensors(path.join(straight.dir, 'run', name))),
      0,
      `${name}: resumed run differs`,
    );
  }
  const losses = (dir: string) => readMetrics(dir).map((l) => l.loss);
  assert.deepEqual(losses(run), losses(path.join(straight.dir, 'run')));
  // Without --resume an existing run is refused rather than overwritten.
  const again = mixlora(['train', killed.file, '--quiet'], { env });
  assert.equal(again.code, 1);
  assert.match(again.stderr, /already holds a training run/);
});

test('the loss goes down on a small real task (stories260K, BoolQ slice), and outputs are written', () => {
  const data = commonsenseSlice('boolq.train', 64);
  const c = writeConfig({
    cutoff_len: 256,
    adapters: [
      {
        name: 'lora',
        data,
        prompt_template: 'none',
        lr: 2e-3,
        batch_size: 8,
        num_epochs: 2,
        adapter: { peft_type: 'LORA', r: 8, lora_alpha: 16, lora_dropout: 0.05, target_modules: ALL_TARGETS },
      },
    ],
  });
  const r = mixlora(['train', c.file], { env });
  assert.equal(r.code, 0, r.stderr);
  const run = path.join(c.dir, 'run');
  const losses = readMetrics(run).map((l) => l.loss);
  assert.equal(losses.length, 16);
  const first = (losses[0]! + losses[1]!) / 2;
  const last = (losses[14]! + losses[15]!) / 2;
  assert.ok(last < 0.6 * first, `loss ${first.toFixed(3)} -> ${last.toFixed(3)}`);
  for (const f of [
    'lora/adapter_config.json',
    'lora/adapter_model.safetensors',
    'loss.svg',
    'loss.png',
    'train_config.json',
  ])
    assert.ok(fs.existsSync(path.join(run, f)), f);
  assert.match(r.stdout, /adapter lora: .*run\/lora/);
  assert.match(r.stderr, /lora: LoRA, [\d,]+ trainable parameters; 64 examples/);
});
