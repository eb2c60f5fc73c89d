// mixlora launch: its usage errors (more ranks than cores or GPUs included), a rank that dies ends the
// job with a non-zero exit naming it, and a signal during the ranks' start leaves no rank behind.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { mixlora, spawnMixlora } from '../helpers/cli.js';
import { tempDir } from '../helpers/fixtures.js';
import { launchTwoRankTraining } from '../helpers/launch.js';
import { launchedDevice, tooManyRanks } from '../../src/distributed/launcher.js';

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

test('more ranks than cores (CPU) or CUDA devices is bad usage naming both numbers, unless --oversubscribe', () => {
  const env = { MASTER_PORT: '', MASTER_ADDR: '' };
  const cores = os.availableParallelism();
  for (const args of [
    ['--nproc-per-node', '1000', 'train', 'c.json'],
    ['--nproc-per-node', String(cores + 1), 'eval', '--device', 'cpu', '--model', 'x', '--task', 'arc-e'],
  ]) {
    const r = mixlora(['launch', ...args], { env });
    assert.equal(r.code, 2, r.stderr);
    assert.match(
      r.stderr,
      new RegExp(
        `^mixlora: --nproc-per-node ${args[1]}: more ranks than this machine's ${cores} cores .*--oversubscribe`,
      ),
    );
  }
  // the device the ranks run on: train's config, eval's and bench's --device
  const dir = tempDir();
  fs.writeFileSync(path.join(dir, 'gpu.yaml'), 'device: cuda\nadapters: []\n');
  assert.equal(launchedDevice(['train', '--threads', '2', path.join(dir, 'gpu.yaml'), '--resume']), 'cuda');
  assert.equal(launchedDevice(['train', path.join(dir, 'missing.yaml')]), 'cpu');
  assert.equal(launchedDevice(['bench', '--method', 'lora', '--device=cuda:1']), 'cuda:1');
  assert.equal(launchedDevice(['eval', '--model', 'm', '--device', 'cuda']), 'cuda');
  const machine = { cores: 16, cudaDevices: 4 };
  assert.equal(tooManyRanks(4, 'cuda', machine), null);
  assert.match(tooManyRanks(5, 'cuda', machine)!, /5: .* 4 CUDA devices; start at most 4, or pass --oversubscribe/);
  assert.match(tooManyRanks(1, 'cuda', { cores: 2, cudaDevices: 0 })!, /no CUDA device/);
  assert.match(tooManyRanks(2, 'cuda:0', machine)!, /every rank would run on cuda:0/);
  assert.equal(tooManyRanks(16, 'cpu', machine), null);
  assert.match(tooManyRanks(17, 'cpu', machine)!, /17: more ranks than this machine's 16 cores/);
});

/** Whether `pid` still runs (a zombie nobody reaped yet counts as gone). */
function running(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return !/^\d+ \(.*\) Z/.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

test('SIGTERM (then SIGINT) while the ranks start: none is left running; the launcher says it once', async () => {
  // Each rank stops for a minute in a --require hook, before bin/mixlora runs: a rank still starting,
  // with no signal handler of its own. It leaves its pid in `dir` first.
  const dir = tempDir();
  const hook = path.join(dir, 'slow-start.cjs');
  fs.writeFileSync(
    hook,
    `if (process.env.RANK !== undefined) {
      require('node:fs').writeFileSync(${JSON.stringify(dir)} + '/pid-' + process.pid, '');
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 60000);
    }`,
  );
  const n = os.availableParallelism() + 2; // more than the cores: --oversubscribe
  const { child, exit } = spawnMixlora(
    ['launch', '--oversubscribe', '--nproc-per-node', String(n), 'train', 'c.json'],
    {
      env: { ...process.env, NODE_OPTIONS: `--require ${hook}`, MASTER_PORT: '', MASTER_ADDR: '' },
      limitMs: 60_000,
    },
  );
  const rankPids = () => fs.readdirSync(dir).filter((f) => f.startsWith('pid-'));
  for (const end = Date.now() + 30_000; rankPids().length === 0 && Date.now() < end;)
    await new Promise((r) => setTimeout(r, 50));
  assert.ok(rankPids().length > 0, 'no rank started within 30 s');
  child.kill('SIGTERM');
  child.kill('SIGINT');
  const { code, stderr } = await exit;
  // 128 + the signal handled first (the kernel may deliver SIGINT, sent second, first)
  assert.ok(code === 143 || code === 130, `exit ${code}: ${stderr}`);
  assert.equal(stderr.match(/passing it on to the ranks/g)?.length, 1, stderr);
  const pids = new Set([
    ...rankPids().map((f) => Number(f.slice('pid-'.length))),
    ...[...stderr.matchAll(/rank \d+ started \(pid (\d+)\)/g)].map((m) => Number(m[1])),
  ]);
  assert.ok(pids.size > 0);
  const left = [...pids].filter(running);
  for (const pid of left) process.kill(pid, 'SIGKILL');
  assert.deepEqual(left, [], `ranks still running after the launcher exited: ${stderr}`);
});
