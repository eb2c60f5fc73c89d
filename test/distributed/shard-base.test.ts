// shard_base: true: two ranks, each holding half of the frozen base and gathering each unit around its use,
// train the adapters one unsharded process trains with the same global batch (stories260K as a Hugging Face
// folder, read one tensor at a time). The bounds are data parallelism's (train-parity.test.ts): the gradients
// are summed in another order, the gathered weights are the same numbers. With recompute (which shard_base
// needs), each layer is gathered for the forward and again for its backward. Covered: LoRA, MixLoRA and
// MixDoRA (DoRA's magnitudes start from the gathered base weights), float32, nf4 and bfloat16 + int8 bases, and
// rank 1 sitting out the short last step of an epoch (it joins the gathers without computing), and evaluation
// during training (every rank evaluates the same batches in step; rank 0 records).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { mixlora, spawnMixlora } from '../helpers/cli.js';
import { referenceDir, STORIES_BIN, STORIES_TOK, tempDir } from '../helpers/fixtures.js';
import {
  adapterTensors,
  checkpointWritten,
  commonsenseSlice,
  maxDiff,
  mixloraAdapter,
  readMetrics,
  writeConfig,
} from '../helpers/train.js';
import { assertFusedStepsLeaveNoTensor } from '../helpers/fused-steps.js';
import { convertLlama2c } from '../../src/models/convert.js';
import { loadModel, loadModelForTraining } from '../../src/models/load.js';
import { readModelConfig } from '../../src/models/config.js';
import type { ShardedBase } from '../../src/models/sharded-base.js';
import { residentBytes } from '../../src/models/frozen-linear.js';
import { shardPlan } from '../../src/bench/shard-plan.js';
import { SOLO } from '../../src/distributed/group.js';
import { tensor } from '../../src/tensor/create.js';
import { liveTensors, tidy } from '../../src/tensor/scope.js';

let hf: string;
before(() => {
  hf = path.join(tempDir(), 'stories260K-hf');
  convertLlama2c(STORIES_BIN, STORIES_TOK, hf);
});
after(() => fs.rmSync(path.dirname(hf), { recursive: true, force: true }));

interface Case {
  optimizer: 'sgd' | 'adamw';
  tolerance: number;
  quantize?: 'nf4' | 'int8';
  dtype?: 'bfloat16';
  dora: boolean;
  /** Evaluation during training too (held-out loss and a commonsense task, every 2 steps and at the end). */
  evaluates?: boolean;
}

/** A LoRA and a MixLoRA (or MixDoRA) adapter trained fused, without dropout or jitter; 9 examples in steps of 4
 * micro-batches of 1, so each epoch ends with a step that rank 1 sits out. */
function config(data: string, c: Case, sharded: boolean): Record<string, unknown> {
  const evaluation = c.evaluates
    ? {
        eval: {
          data: commonsenseSlice('boolq.test', 5),
          tasks: [{ name: 'arc-e', data: commonsenseSlice('arc-e.test', 5) }],
          every: 2,
          batch_size: 3,
        },
      }
    : {};
  const lr = c.optimizer === 'sgd' ? 0.05 : 2e-4;
  const common = {
    data,
    prompt_template: 'none',
    batch_size: 4,
    micro_batch_size: 1,
    num_epochs: 2,
    optimizer: c.optimizer,
    lr,
  };
  return {
    base_model: hf,
    tokenizer: null,
    cutoff_len: 128,
    save_steps: 0,
    recompute: true,
    ...(c.quantize ? { quantize: c.quantize } : {}),
    ...(c.dtype ? { dtype: c.dtype } : {}),
    ...(sharded ? { shard_base: true } : {}),
    ...evaluation,
    adapters: [
      {
        ...common,
        name: 'lora',
        adapter: { peft_type: 'LORA', r: 4, lora_alpha: 8, lora_dropout: 0, target_modules: ['q_proj', 'v_proj'] },
      },
      {
        ...common,
        name: 'mix',
        adapter: mixloraAdapter({ router_aux_loss_coef: 0.01, ...(c.dora ? { use_dora: true } : {}) }),
      },
    ],
  };
}

const CASES: Case[] = [
  { optimizer: 'sgd', tolerance: 1e-6, dora: false, evaluates: true },
  { optimizer: 'adamw', tolerance: 1e-5, dora: true },
  { optimizer: 'sgd', tolerance: 1e-6, quantize: 'nf4', dora: false },
  // bfloat16 embeddings, norms and head (gathered as their bits) beside int8 codes and their float32 scales.
  { optimizer: 'sgd', tolerance: 1e-6, quantize: 'int8', dtype: 'bfloat16', dora: false },
];

for (const c of CASES) {
  const what = `${c.optimizer}, ${[c.dtype ?? 'float32', c.quantize].filter(Boolean).join(' + ')} base, LoRA + ${c.dora ? 'MixDoRA' : 'MixLoRA'}`;
  test(`shard_base (${what}): two ranks end with the adapters of one unsharded process within ${c.tolerance}`, () => {
    const data = commonsenseSlice('boolq.train', 9);
    const alone = writeConfig(config(data, c, false));
    const one = mixlora(['train', alone.file, '--quiet']);
    assert.equal(one.code, 0, one.stderr);
    const job = writeConfig(config(data, c, true));
    const two = mixlora(['launch', '--oversubscribe', '--nproc-per-node', '2', 'train', job.file]);
    assert.equal(two.code, 0, two.stderr);
    // Each rank says what it holds (to 0.1 MiB): about half of the base, as `bench --shard-base --plan` computes.
    const held = [
      ...`${two.stdout}\n${two.stderr}`.matchAll(/sharded over 2 ranks: ([\d.]+) MiB of its ([\d.]+) MiB/g),
    ];
    assert.ok(held.length >= 1, `no sharding line in:\n${two.stderr}`);
    const plan = shardPlan(
      readModelConfig(path.join(hf, 'config.json')),
      c.dtype ?? 'float32',
      c.quantize ?? null,
      [1, 2],
    );
    const [twoRanks] = plan.rows.slice(1);
    const share = twoRanks!.perRankBytes / plan.wholeBytes;
    assert.ok(share > 0.45 && share < 0.56, `a rank holds ${share} of the base`);
    for (const [, mine, whole] of held) {
      assert.ok(
        Math.abs(Number(mine) - twoRanks!.perRankBytes / 2 ** 20) <= 0.05,
        `${mine} MiB: plan ${twoRanks!.perRankBytes} bytes`,
      );
      assert.ok(
        Math.abs(Number(whole) - plan.wholeBytes / 2 ** 20) <= 0.05,
        `${whole} MiB: plan ${plan.wholeBytes} bytes`,
      );
    }
    for (const name of ['lora', 'mix']) {
      const d = maxDiff(
        adapterTensors(path.join(job.dir, 'run', name)),
        adapterTensors(path.join(alone.dir, 'run', name)),
      );
      assert.ok(d <= c.tolerance, `${name}: max difference ${d} > ${c.tolerance}`);
    }
    const a = readMetrics(path.join(alone.dir, 'run'));
    const b = readMetrics(path.join(job.dir, 'run'));
    assert.equal(b.length, a.length);
    // Training lines, and with eval the evaluations every rank ran in step (accuracy exactly: the same
    // choices; the losses as the adapters, within float rounding).
    const evaluated = ['eval_loss', 'eval_arc-e_accuracy'] as const;
    b.forEach((m, i) => {
      const line = m as unknown as Record<string, number>;
      const want = a[i]! as unknown as Record<string, number>;
      const keys = line.split === undefined ? ['loss'] : evaluated;
      for (const k of keys)
        assert.ok(Math.abs(line[k]! - want[k]!) < 1e-5, `${m.adapter} step ${m.step}: ${k} ${line[k]} vs ${want[k]}`);
    });
    assert.equal(
      b.filter((m) => (m as unknown as Record<string, unknown>).split === 'eval').length,
      c.evaluates ? 6 : 0,
    );
    fs.rmSync(alone.dir, { recursive: true, force: true });
    fs.rmSync(job.dir, { recursive: true, force: true });
  });
}

test('shard_base without recompute, or on a GPU, is refused naming the field', () => {
  const data = commonsenseSlice('boolq.train', 9);
  const base = config(data, CASES[1]!, true);
  const plain = writeConfig({ ...base, recompute: false });
  const p = mixlora(['train', plain.file, '--quiet']);
  assert.equal(p.code, 1, p.stderr);
  assert.match(p.stderr, /field 'shard_base' needs recompute: true/);
  const onGpu = writeConfig({ ...base, device: 'cuda' });
  const g = mixlora(['train', onGpu.file, '--quiet']);
  assert.equal(g.code, 1, g.stderr);
  assert.match(g.stderr, /field 'shard_base' needs device: cpu for now/);
});

test('a sharded base in one process: the whole model’s logits, no tensor left between uses or after dispose', () => {
  const start = liveTensors();
  const whole = loadModel(hf).model;
  const sharded = loadModel(hf, { shard: SOLO }).model;
  const ids = tensor([[1, 15, 30, 99, 7]], { dtype: 'int64' });
  tidy(() => {
    const a = whole.forward(ids); // [1, 5, V]
    const b = sharded.forward(ids);
    assert.equal(a.sub(b).abs().amax().item(), 0);
  });
  // One rank holds it all, as `bench --shard-base --plan` computes for one rank.
  const plan = shardPlan(whole.config, 'float32', null, [1]);
  assert.equal(sharded.residency!.residentBytes, plan.rows[0]!.perRankBytes);
  assert.equal(residentBytes(whole.weights), plan.wholeBytes);
  const between = liveTensors();
  tidy(() => void sharded.forward(ids));
  assert.equal(liveTensors(), between, 'the gathered weights are freed after each use');
  for (const t of [whole, sharded, ids]) t.dispose();
  assert.equal(liveTensors(), start);
});

test('a sharded two-rank job killed after a checkpoint resumes to the adapters of an uninterrupted one', async () => {
  const data = commonsenseSlice('boolq.train', 16);
  const c: Record<string, unknown> = { ...config(data, CASES[0]!, true), save_steps: 2 };
  (c.adapters as Record<string, unknown>[]).forEach((a) =>
    Object.assign(a, { batch_size: 4, micro_batch_size: 2, num_epochs: 3 }),
  );
  const launch = ['launch', '--oversubscribe', '--nproc-per-node', '2', 'train'];
  const straight = writeConfig(c);
  const r = mixlora([...launch, straight.file, '--quiet']);
  assert.equal(r.code, 0, r.stderr);
  const killed = writeConfig(c);
  const run = path.join(killed.dir, 'run');
  const job = spawnMixlora([...launch, killed.file, '--quiet']);
  await checkpointWritten(run, job.child);
  process.kill(-job.child.pid!, 'SIGKILL'); // the launcher and its ranks
  await job.exit;
  const resumed = mixlora([...launch, killed.file, '--resume', '--quiet']);
  assert.equal(resumed.code, 0, resumed.stderr);
  for (const name of ['lora', 'mix'])
    assert.equal(
      maxDiff(adapterTensors(path.join(run, name)), adapterTensors(path.join(straight.dir, 'run', name))),
      0,
      name,
    );
  const losses = (dir: string) => readMetrics(dir).map((l) => l.loss);
  assert.deepEqual(losses(run), losses(path.join(straight.dir, 'run')));
});

test('every family sharded in one process gives the whole model’s logits (biases, tied heads, sandwich norms, fused projections)', () => {
  const root = referenceDir('models');
  const families = fs.readdirSync(root).filter((d) => fs.statSync(path.join(root, d)).isDirectory());
  assert.ok(families.length >= 8, families.join(', '));
  for (const name of families) {
    const dir = path.join(root, name);
    const whole = loadModelForTraining(dir).model;
    const sharded = loadModelForTraining(dir, { shard: SOLO }).model;
    const ids = tensor([[1, 5, 9, 2, 7, 3]], { dtype: 'int64' });
    tidy(() => assert.equal(whole.forward(ids).sub(sharded.forward(ids)).abs().amax().item(), 0, name));
    for (const t of [whole, sharded, ids]) t.dispose();
  }
});

test('fused steps over a sharded base leave no tensor behind; recomputing, each next unit is gathered ahead', () => {
  const model = loadModelForTraining(hf, { shard: SOLO }).model;
  const base = model.residency as ShardedBase;
  // One plain and one recomputing step, then one more of each: the plain pass announces nothing.
  assertFusedStepsLeaveNoTensor(
    model,
    { mixlora: {}, mixExamples: [2, 16], doraExamples: [2, 20], unscoredPrefix: 0, stepTokens: 40 },
    1,
  );
  const L = model.config.numLayers;
  const tied = model.config.tieWordEmbeddings ? 1 : 0; // the head of tied embeddings gathers the embeddings too
  const doraInit = 2 * L; // DoRA's magnitudes start from q_proj's and down_proj's weights, each in its layer
  const plain = L + 2 + tied; // the embeddings, each layer, the head
  const recomputing = 2 * L + 2 + tied; // and each layer again, backward
  assert.equal(base.placements.total, doraInit + 2 * (plain + recomputing));
  // In a recomputing pass every unit but the first was gathered while the one before it computed.
  assert.equal(base.placements.gatheredAhead, 2 * (recomputing - 1));
  model.dispose();
});
