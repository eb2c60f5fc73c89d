// A data-parallel job that loses a rank, cannot bind its port or cannot reach its master fails with
// one message naming the rank or address, never hangs; a killed job resumes exactly; another number
// of ranks cannot resume it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import path from 'node:path';
import { mixlora, spawnMixlora } from '../helpers/cli.js';
import {
  adapterTensors,
  checkpointWritten,
  commonsenseSlice,
  maxDiff,
  readMetrics,
  writeConfig,
} from '../helpers/train.js';
import { freePort } from '../../src/distributed/launcher.js';

function config(data: string, epochs: number): Record<string, unknown> {
  return {
    cutoff_len: 128,
    save_steps: 2,
    adapters: [
      {
        name: 'lora',
        data,
        prompt_template: 'none',
        lr: 1e-3,
        batch_size: 4,
        micro_batch_size: 2,
        num_epochs: epochs,
        adapter: { peft_type: 'LORA', r: 4, lora_alpha: 8, lora_dropout: 0, target_modules: ['q_proj', 'v_proj'] },
      },
    ],
  };
}

const rankEnv = (rank: number, port: number, extra: Record<string, string> = {}) => ({
  ...process.env,
  RANK: String(rank),
  WORLD_SIZE: '2',
  LOCAL_RANK: String(rank),
  LOCAL_WORLD_SIZE: '2',
  MASTER_ADDR: '127.0.0.1',
  MASTER_PORT: String(port),
  ...extra,
});

// Over a sharded base the loss is mostly found in a layer's gather (point-to-point messages), else in an all-reduce.
for (const sharded of [false, true]) {
  const what = sharded ? ' (shard_base)' : '';
  test(`SIGKILL of rank 1 mid-run${what}: rank 0 exits non-zero within 60 s, naming rank 1`, async () => {
    const c = writeConfig({
      ...config(commonsenseSlice('boolq.train', 32), 50),
      ...(sharded ? { shard_base: true, recompute: true } : {}),
    });
    const port = await freePort();
    const r0 = spawnMixlora(['train', c.file, '--quiet'], { env: rankEnv(0, port) });
    const r1 = spawnMixlora(['train', c.file, '--quiet'], { env: rankEnv(1, port) });
    await checkpointWritten(path.join(c.dir, 'run'), r1.child);
    r1.child.kill('SIGKILL');
    await r1.exit;
    const { code, stderr } = await r0.exit;
    assert.equal(code, 1, stderr);
    assert.match(stderr, /mixlora: rank 0: .* failed: rank 1 is lost/);
  });
}

test('a master port in use, or a master nobody serves, is a clear error, not a hang', async () => {
  const c = writeConfig(config(commonsenseSlice('boolq.train', 8), 1));
  const busy = net.createServer();
  await new Promise<void>((resolve) => busy.listen(0, '0.0.0.0', () => resolve()));
  const port = (busy.address() as net.AddressInfo).port;
  try {
    const { code, stderr } = await spawnMixlora(['train', c.file, '--quiet'], {
      env: rankEnv(0, port, { MIXLORA_DIST_TIMEOUT: '5' }),
    }).exit;
    assert.equal(code, 1, stderr);
    assert.match(
      stderr,
      new RegExp(`mixlora: rank 0: cannot serve the rendezvous at 127\\.0\\.0\\.1:${port} .*MASTER_PORT=${port}`),
    );
  } finally {
    busy.close();
  }
  const nobody = await freePort();
  const { code, stderr } = await spawnMixlora(['train', c.file, '--quiet'], {
    env: rankEnv(1, nobody, { MIXLORA_DIST_TIMEOUT: '3' }),
  }).exit;
  assert.equal(code, 1, stderr);
  assert.match(
    stderr,
    new RegExp(`mixlora: rank 1: cannot join the rendezvous at 127\\.0\\.0\\.1:${nobody} within 3 s`),
  );
});

test('a two-rank job killed after a checkpoint resumes to the adapters of an uninterrupted job; one rank cannot resume it', async () => {
  const data = commonsenseSlice('boolq.train', 16);
  const straight = writeConfig(config(data, 3));
  const r = mixlora(['launch', '--oversubscribe', '--nproc-per-node', '2', 'train', straight.file, '--quiet']);
  assert.equal(r.code, 0, r.stderr);

  const killed = writeConfig(config(data, 3));
  const run0 = path.join(killed.dir, 'run');
  const job = spawnMixlora(['launch', '--oversubscribe', '--nproc-per-node', '2', 'train', killed.file, '--quiet']);
  await checkpointWritten(run0, job.child);
  process.kill(-job.child.pid!, 'SIGKILL'); // the whole job: the launcher and its ranks
  await job.exit;
  const alone = mixlora(['train', killed.file, '--resume', '--quiet']);
  assert.equal(alone.code, 1);
  assert.match(alone.stderr, /written by 2 ranks: resume it with WORLD_SIZE=2/);
  const resumed = mixlora([
    'launch',
    '--oversubscribe',
    '--nproc-per-node',
    '2',
    'train',
    killed.file,
    '--resume',
    '--quiet',
  ]);
  assert.equal(resumed.code, 0, resumed.stderr);
  assert.equal(
    maxDiff(adapterTensors(path.join(run0, 'lora')), adapterTensors(path.join(straight.dir, 'run', 'lora'))),
    0,
  );
  const losses = (run: string) => readMetrics(run).map((l) => l.loss);
  assert.deepEqual(losses(run0), losses(path.join(straight.dir, 'run')));
});
