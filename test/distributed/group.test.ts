// The c10d process group through the addon, with two real processes on this machine: sums, gathers,
// and the environment checks that refuse a half-described job.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { readDistEnv } from '../../src/distributed/env.js';
import { freePort } from '../../src/distributed/launcher.js';

const worker = path.join(path.dirname(fileURLToPath(import.meta.url)), 'group-worker.js');

test('two ranks: all-reduce sums in place (in buckets; large or strided tensors too), gathers come in rank order, nothing leaks', async () => {
  const port = String(await freePort());
  const outputs = await Promise.all(
    [0, 1].map(
      (rank) =>
        new Promise<string>((resolve, reject) => {
          const env = {
            ...process.env,
            RANK: String(rank),
            WORLD_SIZE: '2',
            MASTER_ADDR: '127.0.0.1',
            MASTER_PORT: port,
          };
          execFile(process.execPath, [worker], { env, timeout: 60_000 }, (e, stdout, stderr) =>
            e ? reject(new Error(`rank ${rank}: ${e.message}\n${stderr}`)) : resolve(stdout),
          );
        }),
    ),
  );
  for (const [rank, text] of outputs.entries()) {
    const o = JSON.parse(text);
    assert.equal(o.rank, rank);
    assert.equal(o.backend, 'gloo', 'CPU tensors: Gloo');
    assert.deepEqual(o.sums, [
      [3, 30],
      [1, 1],
    ]);
    assert.deepEqual(
      o.bucketed,
      [3, 6, 9, 12, 15, 18].map((v) => [v, v]),
    );
    assert.deepEqual(o.gathered, [0, 255, 1, 254]);
    assert.deepEqual(o.numbers, [
      [0, 2 ** 40],
      [1.5, 2 ** 40 + 1],
    ]);
    assert.deepEqual(o.json, [
      { rank: 0, text: 'é' },
      { rank: 1, text: 'éé' },
    ]);
    assert.equal(o.leaked, 0);
  }
});

test('the environment: alone without WORLD_SIZE, and one clear error for each missing or bad variable', () => {
  assert.equal(readDistEnv({}), null);
  assert.equal(readDistEnv({ WORLD_SIZE: '1' }), null);
  const full = { WORLD_SIZE: '2', RANK: '1', MASTER_ADDR: 'h', MASTER_PORT: '29500' };
  assert.deepEqual(readDistEnv(full), {
    rank: 1,
    worldSize: 2,
    localRank: 0,
    localWorldSize: 1,
    masterAddr: 'h',
    masterPort: 29500,
    timeoutMs: 600_000,
  });
  assert.throws(() => readDistEnv({ ...full, RANK: '2' }), /RANK=2: expected an integer from 0 to 1/);
  assert.throws(() => readDistEnv({ ...full, RANK: undefined }), /RANK is not set/);
  assert.throws(() => readDistEnv({ ...full, MASTER_ADDR: '' }), /MASTER_ADDR is not set/);
  assert.throws(
    () => readDistEnv({ ...full, MASTER_PORT: '70000' }),
    /MASTER_PORT=70000: expected an integer from 1 to 65535/,
  );
  assert.throws(() => readDistEnv({ ...full, WORLD_SIZE: 'two' }), /WORLD_SIZE=two/);
});
