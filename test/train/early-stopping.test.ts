// Early stopping: an adapter whose eval metric stops improving ends (the others of a fused run go on), keeps
// best/<name>, and says so in metrics.jsonl and the log; a resumed run keeps counting its patience.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { adapterTensors, commonsenseSlice, maxDiff, writeConfig } from '../helpers/train.js';
import { readTrainConfig } from '../../src/train/config.js';
import { train } from '../../src/train/trainer.js';
import { freshEarlyStop, observe, type EarlyStoppingConfig } from '../../src/train/early-stopping.js';
import type { Progress } from '../../src/util/progress.js';

const LORA = { peft_type: 'LORA', r: 4, lora_alpha: 8, target_modules: ['q_proj', 'v_proj', 'down_proj'] };

test('patience counts evaluations without an improvement by more than min_delta', () => {
  const c: EarlyStoppingConfig = { metric: 'eval_loss', mode: 'min', patience: 2, minDelta: 0.1 };
  const s = freshEarlyStop();
  const seen = [2.0, 1.95, 1.85, 1.8, 1.9].map((v, i) => [observe(c, s, v, i + 1), s.bad, s.best, s.bestStep]);
  // 1.95 is not 0.1 below 2.0; 1.85 is (best moves); 1.8 is not 0.1 below 1.85; 1.9 neither: patience 2 is out.
  assert.deepEqual(seen, [
    [false, 0, 2.0, 1],
    [false, 1, 2.0, 1],
    [false, 0, 1.85, 3],
    [false, 1, 1.85, 3],
    [true, 2, 1.85, 3],
  ]);
  const max: EarlyStoppingConfig = { metric: 'eval_accuracy', mode: 'max', patience: 1, minDelta: 0 };
  const m = freshEarlyStop();
  assert.deepEqual(
    [0.5, 0.6, 0.6].map((v, i) => observe(max, m, v, i)),
    [false, false, true],
  );
});

test('early_stopping blocks are checked; the top-level one is every adapter default', () => {
  const heldOut = commonsenseSlice('boolq.train', 2, 300);
  const adapter = (extra: Record<string, unknown> = {}) => ({
    name: 'a',
    data: commonsenseSlice('boolq.train', 2),
    adapter: LORA,
    ...extra,
  });
  const evalBlock = { data: heldOut, every: 1 };
  const cases: [Record<string, unknown>, RegExp][] = [
    [
      { adapters: [adapter({ early_stopping: { patience: 2 } })] },
      /adapters\[0\]: field 'early_stopping' needs an eval block/,
    ],
    [
      { eval: { data: heldOut }, adapters: [adapter({ early_stopping: {} })] },
      /field 'early_stopping' counts evaluations, and eval\.every is 0/,
    ],
    [
      { eval: evalBlock, adapters: [adapter({ early_stopping: { metric: 'eval_accuracy' } })] },
      /early_stopping: field 'metric' 'eval_accuracy' is not a metric of the eval block \(eval_loss\)/,
    ],
    [
      { eval: evalBlock, adapters: [adapter({ early_stopping: { mode: 'lower' } })] },
      /field 'mode' must be one of min, max/,
    ],
    [{ eval: evalBlock, adapters: [adapter({ early_stopping: { patience: 0 } })] }, /field 'patience' must be >= 1/],
    [{ eval: evalBlock, adapters: [adapter({ early_stopping: { min_delta: -1 } })] }, /field 'min_delta' must be >= 0/],
    [
      { eval: evalBlock, adapters: [adapter({ early_stopping: { patient: 2 } })] },
      /early_stopping: unknown field 'patient'/,
    ],
  ];
  for (const [config, re] of cases) assert.throws(() => readTrainConfig(writeConfig(config).file), re, re.source);

  const cfg = readTrainConfig(
    writeConfig({
      eval: { ...evalBlock, tasks: ['boolq'], save_best: 'eval_boolq_accuracy' },
      early_stopping: { patience: 4 },
      adapters: [adapter(), adapter({ name: 'b', early_stopping: { metric: 'eval_loss', min_delta: 0.01 } })],
    }).file,
  );
  assert.deepEqual(cfg.adapters[0]!.earlyStopping, {
    metric: 'eval_boolq_accuracy', // save_best's metric by default
    mode: 'max',
    patience: 4,
    minDelta: 0,
  });
  assert.deepEqual(cfg.adapters[1]!.earlyStopping, { metric: 'eval_loss', mode: 'min', patience: 3, minDelta: 0.01 });
  // Without one, the adapter's config has no earlyStopping key (the digest of older configs is unchanged).
  assert.ok(!('earlyStopping' in readTrainConfig(writeConfig({ adapters: [adapter()] }).file).adapters[0]!));
});

function config(heldOut: string, a: string, b: string): Record<string, unknown> {
  return {
    cutoff_len: 256,
    save_steps: 1,
    eval: { data: heldOut, every: 1, batch_size: 4 },
    adapters: [
      {
        // min_delta far above any change of the loss: no evaluation after the first is an improvement
        name: 'stops',
        data: a,
        adapter: LORA,
        batch_size: 2,
        max_steps: 8,
        lr: 0.05,
        early_stopping: { metric: 'eval_loss', patience: 2, min_delta: 100 },
      },
      { name: 'goes-on', data: b, adapter: LORA, batch_size: 2, max_steps: 5, lr: 0.05 },
    ],
  };
}

interface Line {
  adapter: string;
  step: number;
  split?: string;
  best?: boolean;
  early_stop?: boolean;
  evals_without_improvement?: number;
}

const lines = (dir: string): Line[] =>
  fs
    .readFileSync(path.join(dir, 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Line & { tokens_per_s?: number })
    .map(({ tokens_per_s: _, ...l }) => l); // (timings differ between runs)

test('a fused run: the stalled adapter stops (metrics.jsonl, log, best/), the other runs all its steps; resume keeps the patience', async () => {
  const heldOut = commonsenseSlice('boolq.train', 4, 300);
  const [a, b] = [commonsenseSlice('boolq.train', 16), commonsenseSlice('boolq.train', 10, 100)];
  const logs: string[] = [];
  const progress: Progress = {
    bar: () => ({ update: () => {}, stop: () => {} }),
    log: (s) => logs.push(s),
    stop: () => {},
  };
  const straight = readTrainConfig(writeConfig(config(heldOut, a, b)).file);
  const result = await train(straight, { progress });
  const all = lines(straight.outputDir);
  const train_ = (name: string) => all.filter((l) => l.adapter === name && l.split !== 'eval').map((l) => l.step);
  const evals = all.filter((l) => l.adapter === 'stops' && l.split === 'eval');
  assert.deepEqual(train_('stops'), [1, 2, 3], 'stops after its third evaluation (patience 2)');
  assert.deepEqual(train_('goes-on'), [1, 2, 3, 4, 5]);
  assert.deepEqual(
    evals.map((l) => [l.step, l.evals_without_improvement, l.early_stop ?? false]),
    [
      [1, 0, false],
      [2, 1, false],
      [3, 2, true],
    ],
  );
  assert.ok(!all.some((l) => l.adapter === 'goes-on' && 'evals_without_improvement' in l));
  assert.ok(evals[0]!.best, 'the first evaluation is the best so far');
  assert.ok(fs.existsSync(path.join(straight.outputDir, 'best', 'stops', 'adapter_model.safetensors')));
  assert.ok(fs.existsSync(path.join(straight.outputDir, 'stops', 'adapter_model.safetensors')));
  assert.equal(result.outputs.stops, path.join(straight.outputDir, 'stops'));
  assert.ok(
    logs.some((l) => /stops step 3: .*early stopping: eval_loss has not improved by more than 100 for 2/.test(l)),
    logs.join('\n'),
  );
  assert.ok(
    logs.some((l) => /stops: stopped early after 3 of 8 steps \(eval_loss best at step 1\)/.test(l)),
    logs.join('\n'),
  );

  // Cut after the second checkpoint (one evaluation without improvement counted), then resumed: it stops at the
  // same step, with the same lines and adapters.
  const cut = readTrainConfig(writeConfig(config(heldOut, a, b)).file);
  await train(cut);
  const ckpts = path.join(cut.outputDir, 'checkpoints');
  const names = fs.readdirSync(ckpts).sort((x, y) => Number(x.split('-')[1]) - Number(y.split('-')[1]));
  for (const n of names.slice(2)) fs.rmSync(path.join(ckpts, n), { recursive: true });
  for (const n of ['stops', 'goes-on']) fs.rmSync(path.join(cut.outputDir, n), { recursive: true });
  await train(cut, { resume: true });
  assert.deepEqual(lines(cut.outputDir), all);
  for (const dir of ['stops', 'goes-on', 'best/stops'])
    assert.equal(
      maxDiff(adapterTensors(path.join(cut.outputDir, dir)), adapterTensors(path.join(straight.outputDir, dir))),
      0,
      dir,
    );
});
