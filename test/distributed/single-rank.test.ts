// MIXLORA_DIST_FORCE_GROUP=1 runs a one-rank job through a real c10d group (the GPU check runs it so on
// ProcessGroupNCCL with one GPU): its training equals a process alone bit for bit (one rank's sum is
// its own gradients, its RNG the run's), and the log and the benchmark name the backend.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { mixlora } from '../helpers/cli.js';
import { adapterTensors, commonsenseSlice, maxDiff, writeConfig } from '../helpers/train.js';
import { freePort } from '../../src/distributed/launcher.js';

const oneRank = async () => ({
  WORLD_SIZE: '1',
  RANK: '0',
  MASTER_ADDR: '127.0.0.1',
  MASTER_PORT: String(await freePort()),
  MIXLORA_DIST_FORCE_GROUP: '1',
});

test('a forced one-rank group trains exactly as a process alone; the log names Gloo', async () => {
  const config = {
    cutoff_len: 128,
    save_steps: 0,
    adapters: [
      {
        name: 'lora',
        data: commonsenseSlice('boolq.train', 8),
        prompt_template: 'none',
        batch_size: 4,
        micro_batch_size: 2,
        max_steps: 2,
        adapter: { peft_type: 'LORA', r: 4, lora_alpha: 8, lora_dropout: 0.1, target_modules: ['q_proj', 'v_proj'] },
      },
    ],
  };
  const alone = writeConfig(config);
  const one = mixlora(['train', alone.file, '--quiet']);
  assert.equal(one.code, 0, one.stderr);
  const grouped = writeConfig(config);
  const g = mixlora(['train', grouped.file], { env: await oneRank() });
  assert.equal(g.code, 0, g.stderr);
  assert.match(g.stderr, /rank 0 of 1: collectives with Gloo/);
  const d = maxDiff(
    adapterTensors(path.join(grouped.dir, 'run', 'lora')),
    adapterTensors(path.join(alone.dir, 'run', 'lora')),
  );
  assert.equal(d, 0);
});

test("bench's JSON names the collectives' backend (null alone)", async () => {
  const args = [
    'bench',
    '--preset',
    'llama-tiny',
    '--method',
    'lora',
    '--steps',
    '1',
    '--warmup',
    '0',
    '--threads',
    '1',
    '--json',
  ];
  const last = (out: string) => JSON.parse(out.trim().split('\n').pop()!) as { collective_backend: string | null };
  const alone = mixlora(args);
  assert.equal(alone.code, 0, alone.stderr);
  assert.equal(last(alone.stdout).collective_backend, null);
  const g = mixlora(args, { env: await oneRank() });
  assert.equal(g.code, 0, g.stderr);
  assert.equal(last(g.stdout).collective_backend, 'gloo');
});
