// Which backend carries a rank's collectives (NCCL for a CUDA rank when the addon has it, else Gloo),
// the device a rank trains on, and the switch that makes WORLD_SIZE=1 a real one-rank group.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chooseBackend, rankDevice } from '../../src/distributed/backend.js';
import { readDistEnv } from '../../src/distributed/env.js';

test('NCCL for a CUDA rank when the addon has it, Gloo otherwise; MIXLORA_DIST_BACKEND overrides', () => {
  assert.deepEqual(chooseBackend('cpu', true, {}), { backend: 'gloo', ncclDevice: null });
  assert.deepEqual(chooseBackend('cuda', true, {}), { backend: 'nccl', ncclDevice: 0 });
  assert.deepEqual(chooseBackend('cuda:3', true, {}), { backend: 'nccl', ncclDevice: 3 });
  assert.deepEqual(chooseBackend('cuda:3', false, {}), { backend: 'gloo', ncclDevice: null });
  const gloo = { MIXLORA_DIST_BACKEND: 'gloo' };
  assert.deepEqual(chooseBackend('cuda:1', true, gloo), { backend: 'gloo', ncclDevice: null });
  const nccl = { MIXLORA_DIST_BACKEND: 'nccl' };
  assert.deepEqual(chooseBackend('cuda:1', true, nccl), { backend: 'nccl', ncclDevice: 1 });
  assert.throws(() => chooseBackend('cpu', true, nccl), /NCCL needs a CUDA device, but this rank runs on cpu/);
  assert.throws(() => chooseBackend('cuda', false, nccl), /this addon has no NCCL/);
  assert.throws(() => chooseBackend('cpu', true, { MIXLORA_DIST_BACKEND: 'mpi' }), /MIXLORA_DIST_BACKEND=mpi/);
});

test('each rank of a CUDA job trains on cuda:LOCAL_RANK; explicit devices stay', () => {
  const env = readDistEnv({
    WORLD_SIZE: '4',
    RANK: '3',
    LOCAL_RANK: '1',
    LOCAL_WORLD_SIZE: '2',
    MASTER_ADDR: 'h',
    MASTER_PORT: '1234',
  });
  assert.equal(rankDevice('cuda', env), 'cuda:1');
  assert.equal(rankDevice('cuda:0', env), 'cuda:0');
  assert.equal(rankDevice('cpu', env), 'cpu');
  assert.equal(rankDevice('cuda', null), 'cuda');
});

test('WORLD_SIZE=1 runs alone unless MIXLORA_DIST_FORCE_GROUP=1 asks for a real one-rank group', () => {
  const one = { WORLD_SIZE: '1', RANK: '0', MASTER_ADDR: '127.0.0.1', MASTER_PORT: '29500' };
  assert.equal(readDistEnv(one), null);
  assert.deepEqual(readDistEnv({ ...one, MIXLORA_DIST_FORCE_GROUP: '1' }), {
    rank: 0,
    worldSize: 1,
    localRank: 0,
    localWorldSize: 1,
    masterAddr: '127.0.0.1',
    masterPort: 29500,
    timeoutMs: 600_000,
  });
});
