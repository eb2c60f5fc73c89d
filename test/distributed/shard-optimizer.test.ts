// shard_optimizer: true (ZeRO stage 1): each rank keeps the optimizer state of its share of the parameters,
// updates those and hands the others their values. Each parameter's update is the arithmetic plain data
// parallelism does on the same summed gradients, so the adapters equal its, bit for bit; the checkpoints
// hold the state as an unsharded optimizer saves it; a sharded job resumes from its checkpoint exactly.
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
import { loadAll } from '../../src/io/safetensors.js';
import { ownerRanks } from '../../src/train/sharded-optimizer.js';

test('ownerRanks: the largest parameters first, each to the least-loaded rank; the same on every rank', () => {
  assert.deepEqual(ownerRanks([10, 10, 4, 4, 2], 2), [0, 1, 0, 1, 0]);
  assert.deepEqual(ownerRanks([1, 8, 3, 3, 2], 2), [0, 0, 1, 1, 1]);
  assert.deepEqual(ownerRanks([5, 5, 5], 4), [0, 1, 2]);
  assert.deepEqual(ownerRanks([7, 1], 1), [0, 0]);
});

/** LoRA and MixLoRA fused, two ranks, 8 optimizer steps of 4 micro-batches (2 fused steps each); a checkpoint
 * every 4 optimizer steps (checkpoint-8 after fused step 8). */
function config(data: string, optimizer: string, sharded: boolean): Record<string, unknown> {
  const common = {
    data,
    prompt_template: 'none',
    batch_size: 4,
    micro_batch_size: 1,
    num_epochs: 2,
    optimizer,
    lr: 2e-3,
    max_grad_norm: 1,
  };
  return {
    cutoff_len: 128,
    save_steps: 4,
    ...(sharded ? { shard_optimizer: true } : {}),
    adapters: [
      {
        ...common,
        name: 'lora',
        adapter: { peft_type: 'LORA', r: 4, lora_alpha: 8, lora_dropout: 0, target_modules: ['q_proj', 'v_proj'] },
      },
      { ...common, name: 'mix', adapter: mixloraAdapter({ router_aux_loss_coef: 0.01 }) },
    ],
  };
}

const launch = (file: string, ...extra: string[]) =>
  mixlora(['launch', '--oversubscribe', '--nproc-per-node', '2', 'train', file, '--quiet', ...extra]);

function assertSameRuns(a: string, b: string, what: string): void {
  for (const name of ['lora', 'mix']) {
    const d = maxDiff(adapterTensors(path.join(b, name)), adapterTensors(path.join(a, name)));
    assert.equal(d, 0, `${what}: ${name} differs by ${d}`);
  }
  const [ma, mb] = [readMetrics(a), readMetrics(b)];
  assert.equal(mb.length, ma.length);
  mb.forEach((m, i) => assert.equal(m.loss, ma[i]!.loss, `${what}: ${m.adapter} step ${m.step}`));
}

for (const optimizer of ['adamw', 'adamw8bit']) {
  test(`shard_optimizer (${optimizer}): two ranks equal plain data parallelism bit for bit, checkpoints too; resumed exactly`, () => {
    const data = commonsenseSlice('boolq.train', 16);
    const plain = writeConfig(config(data, optimizer, false));
    const p = launch(plain.file);
    assert.equal(p.code, 0, p.stderr);
    const sharded = writeConfig(config(data, optimizer, true));
    const s = launch(sharded.file);
    assert.equal(s.code, 0, s.stderr);
    const [plainRun, shardedRun] = [path.join(plain.dir, 'run'), path.join(sharded.dir, 'run')];
    assertSameRuns(plainRun, shardedRun, 'sharded vs plain');

    // The checkpoint after 8 fused steps: every optimizer tensor, under the unsharded names.
    const ckpt = (run: string, name: string) =>
      loadAll(path.join(run, 'checkpoints', 'checkpoint-8', `${name}.safetensors`)).tensors;
    for (const name of ['lora', 'mix']) {
      const [a, b] = [ckpt(plainRun, name), ckpt(shardedRun, name)];
      const optim = [...a.keys()].filter((k) => k.startsWith('optim.')).sort();
      assert.ok(optim.length > 0, `${name}: no optimizer state in the checkpoint`);
      assert.deepEqual([...b.keys()].filter((k) => k.startsWith('optim.')).sort(), optim);
      assert.equal(maxDiff(a, b), 0, `${name}: the checkpoints differ`);
      for (const t of [...a.values(), ...b.values()]) t.dispose();
    }

    if (optimizer !== 'adamw') return;
    // Resumed from that checkpoint: the later one and the results removed (the same config and output_dir).
    for (const n of fs.readdirSync(path.join(shardedRun, 'checkpoints')))
      if (n !== 'checkpoint-8') fs.rmSync(path.join(shardedRun, 'checkpoints', n), { recursive: true });
    for (const name of ['lora', 'mix']) fs.rmSync(path.join(shardedRun, name), { recursive: true });
    // (a mark on the first metrics line: a resumed run keeps the lines before its checkpoint, a fresh one would not)
    const metrics = path.join(shardedRun, 'metrics.jsonl');
    const lines = fs.readFileSync(metrics, 'utf8').split('\n');
    lines[0] = JSON.stringify({ ...JSON.parse(lines[0]!), kept: true });
    fs.writeFileSync(metrics, lines.join('\n'));
    const r = launch(sharded.file, '--resume');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(fs.readFileSync(metrics, 'utf8').split('\n')[0]!).kept, true, 'not resumed');
    assertSameRuns(plainRun, shardedRun, 'resumed vs uninterrupted');
    for (const dir of [plain.dir, sharded.dir]) fs.rmSync(dir, { recursive: true, force: true });
  });
}
