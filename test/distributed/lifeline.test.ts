// A launcher killed with SIGKILL cannot end its ranks: they notice that their parent is gone
// (native/distributed/lifeline.cc) and exit on their own within a few seconds, naming the launcher.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { MIXLORA_BIN, tempDir } from '../helpers/fixtures.js';
import { launchTwoRankTraining } from '../helpers/launch.js';

/** Whether `pid` still runs (a zombie nobody reaped yet counts as gone). */
function running(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    return !/^\d+ \(.*\) Z/.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

/** Resolves with the pids still running after `limitMs` (none when all exit sooner). */
async function gone(pids: number[], limitMs: number): Promise<number[]> {
  const end = Date.now() + limitMs;
  while (Date.now() < end) {
    if (!pids.some(running)) return [];
    await new Promise((r) => setTimeout(r, 100));
  }
  return pids.filter(running);
}

test('SIGKILL of mixlora launch: its ranks, busy training, are gone within a few seconds', async () => {
  const { job, pids, stderr, exited } = await launchTwoRankTraining();
  assert.equal(pids.size, 2, `the ranks did not start: ${stderr()}`);
  job.kill('SIGKILL');
  await exited;
  const left = await gone([...pids.values()], 10_000);
  for (const pid of left) process.kill(pid, 'SIGKILL');
  assert.deepEqual(left, [], `ranks still running 10 s after the launcher was killed: ${stderr()}`);
});

test('a rank whose launcher is gone says so, naming the launcher, and exits', async () => {
  // A stand-in launcher: starts one rank (a long benchmark, its JavaScript blocked in the steps) with
  // stderr into a file, reports the rank's pid, then waits to be killed.
  const log = path.join(tempDir(), 'rank.log');
  const script = `
    const { spawn } = require('node:child_process');
    const fs = require('node:fs');
    const out = fs.openSync(${JSON.stringify(log)}, 'w');
    const rank = spawn(process.execPath, [${JSON.stringify(MIXLORA_BIN)}, 'bench', '--preset', 'llama-tiny', '--method', 'lora',
      '--steps', '100000', '--warmup', '0', '--threads', '1'], {
      stdio: ['ignore', 'ignore', out],
      env: { ...process.env, RANK: '3', MIXLORA_LAUNCHER_PID: String(process.pid) },
    });
    process.stdout.write(rank.pid + '\\n');
    setInterval(() => {}, 1000);`;
  const launcher = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  const pid = await new Promise<number>((resolve) => launcher.stdout.once('data', (d: Buffer) => resolve(Number(d))));
  // the rank is past its start-up (the addon loaded, the watch begun) once the benchmark steps run
  await new Promise((r) => setTimeout(r, 3000));
  assert.ok(running(pid), `the rank ended early: ${fs.readFileSync(log, 'utf8')}`);
  launcher.kill('SIGKILL');
  const left = await gone([pid], 10_000);
  if (left.length) process.kill(pid, 'SIGKILL');
  assert.deepEqual(left, [], 'the rank still runs 10 s after its launcher was killed');
  assert.match(
    fs.readFileSync(log, 'utf8'),
    new RegExp(`mixlora: rank 3: its launcher \\(mixlora launch, pid ${launcher.pid}\\) is gone; exiting`),
  );
});
