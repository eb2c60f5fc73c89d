// mixlora launch: its usage errors, and a rank that dies ends the job with a non-zero exit naming it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mixlora } from '../helpers/cli.js';
import { launchTwoRankTraining } from '../helpers/launch.js';

test('bad usage exits 2 naming the flag; several machines need a port', () => {
  const env = { MASTER_PORT: '', MASTER_ADDR: '' };
  const other = mixlora(['launch', '--nproc-per-node', '2', 'generate', '--model', 'x'], { env });
  assert.equal(other.code, 2);
  assert.match(other.stderr, /mixlora launch runs train, eval or bench, not 'generate'/);
  const rank = mixlora(['launch', '--nproc-per-node', '1', '--nnodes', '2', '--node-rank', '2', 'train', 'c.json'], {
    env,
  });
  assert.equal(rank.code, 2);
  assert.match(rank.stderr, /--node-rank 2 must be below --nnodes 2/);
  assert.equal(mixlora(['launch', '--nproc-per-node', '0', 'train', 'c.json'], { env }).code, 2);
  const port = mixlora(['launch', '--nproc-per-node', '1', '--nnodes', '2', 'train', 'c.json'], { env });
  assert.equal(port.code, 1);
  assert.match(port.stderr, /--nnodes > 1 needs --master-port/);
});

test('a rank killed under the launcher ends the others; the launcher exits non-zero naming it', async () => {
  const { pids, stderr, exited } = await launchTwoRankTraining();
  process.kill(pids.get(1)!, 'SIGKILL');
  const code = await Promise.race([
    exited,
    new Promise<null>((_, reject) => setTimeout(() => reject(new Error(`no exit within 60 s: ${stderr()}`)), 60_000)),
  ]);
  assert.notEqual(code, 0);
  assert.match(stderr(), /mixlora launch: rank 1 was killed by SIGKILL; ending the other ranks/);
  assert.throws(() => process.kill(pids.get(0)!, 0), /ESRCH/, 'rank 0 is gone');
});
