// Issue 11, cases 1-4: a training run never deletes or overwrites a user's files, only one run uses an
// output folder at a time, and a resumed run's metrics match its state.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { MIXLORA_BIN, tempDir } from '../helpers/fixtures.js';
import { mixlora } from '../helpers/cli.js';
import { commonsenseSlice, writeConfig } from '../helpers/train.js';
import { writeDirAtomic } from '../../src/io/atomic.js';
import { readTrainConfig } from '../../src/train/config.js';
import { acquireRunLock, LOCK_FILE } from '../../src/io/run-lock.js';

const env = { MIXLORA_NUM_THREADS: '1' };

function adapter(name: string, data: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    name,
    data,
    prompt_template: 'none',
    batch_size: 2,
    max_steps: 2,
    adapter: { peft_type: 'LORA', r: 2, lora_alpha: 4, target_modules: ['q_proj'] },
    ...extra,
  };
}

/** Every file under `dir` with its contents (to show nothing changed). */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else out[path.relative(dir, p)] = fs.readFileSync(p, 'latin1');
    }
  };
  walk(dir);
  return out;
}

test('case 1: adapter names that are not plain folder names, or clash with run files, are refused', () => {
  const data = commonsenseSlice('boolq.train', 4);
  for (const name of ['.', 'checkpoints', 'Checkpoints', 'metrics.jsonl', 'loss.png', '.hidden', 'a/b']) {
    const c = writeConfig({ adapters: [adapter(name, data)] });
    assert.throws(() => readTrainConfig(c.file), /train\.json:\d+: adapters\[0\]: field 'name'/, name);
  }
  {
    const name = '..';
    const c = writeConfig({ adapters: [adapter(name, data)] });
    fs.writeFileSync(path.join(c.dir, 'notes.txt'), 'my notes');
    const before = snapshot(c.dir);
    const r = mixlora(['train', c.file, '--quiet'], { env });
    assert.equal(r.code, 1, `${name}: ${r.stderr}`);
    assert.match(r.stderr, /train\.json:\d+: adapters\[0\]: field 'name'/, name);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.deepEqual(snapshot(c.dir), before, `${name}: files changed`);
  }
  const data2 = commonsenseSlice('boolq.train', 4);
  const c = writeConfig({ adapters: [adapter('lora', data2), adapter('LoRA', data2)] });
  const r = mixlora(['train', c.file, '--quiet'], { env });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /two adapters are named/);
});

test('case 2: an output_dir holding files mixlora did not write is refused, naming the file; nothing changes', () => {
  const data = commonsenseSlice('boolq.train', 4);
  const cases: [string, (run: string) => void, RegExp][] = [
    ['a file in an adapter folder', (run) => writeFile(path.join(run, 'lora', 'thesis.tex')), /'lora\/thesis\.tex'/],
    ['a file at the top', (run) => writeFile(path.join(run, 'notes.md')), /'notes\.md'/],
    ['a folder at the top', (run) => writeFile(path.join(run, 'data', 'x.jsonl')), /'data'/],
    ['a file in checkpoints/', (run) => writeFile(path.join(run, 'checkpoints', 'README')), /'checkpoints\/README'/],
  ];
  for (const [what, make, named] of cases) {
    for (const resume of what === 'a file in an adapter folder' ? [false, true] : [false]) {
      const c = writeConfig({ adapters: [adapter('lora', data)] });
      const run = path.join(c.dir, 'run');
      make(run);
      const before = snapshot(c.dir);
      const r = mixlora(['train', c.file, '--quiet', ...(resume ? ['--resume'] : [])], { env });
      assert.equal(r.code, 1, `${what}: ${r.stderr}`);
      assert.match(r.stderr, named, what);
      assert.match(r.stderr, /not a file of a mixlora training run/);
      assert.deepEqual(snapshot(c.dir), before, `${what}: files changed`);
    }
  }
  // A previous run's train_config.json alone already counts as a run: refused without --resume.
  const c = writeConfig({ adapters: [adapter('lora', data)] });
  writeFile(path.join(c.dir, 'run', 'train_config.json'));
  const r = mixlora(['train', c.file, '--quiet'], { env });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /already holds a training run/);
  assert.equal(fs.readFileSync(path.join(c.dir, 'run', 'train_config.json'), 'utf8'), 'user data');
});

test("case 2: output_dir may not be a root or a parent of the run's own inputs", () => {
  const data = commonsenseSlice('boolq.train', 4);
  for (const out of ['..', '.', '/']) {
    const dir = tempDir();
    const sub = path.join(dir, 'project');
    fs.mkdirSync(sub);
    fs.writeFileSync(path.join(dir, 'notes.txt'), 'my notes');
    const c = writeConfig({ output_dir: out, adapters: [adapter('lora', data)] }, sub);
    const before = snapshot(dir);
    const r = mixlora(['train', c.file, '--quiet'], { env });
    assert.equal(r.code, 1, `${out}: ${r.stderr}`);
    assert.match(r.stderr, out === '/' ? /is a file-system root/ : /contains .*train\.json, an input of this run/, out);
    assert.deepEqual(snapshot(dir), before);
  }
});

test('case 2: replacing a folder (adapter save, merge --force) never removes a file the tool did not write', () => {
  const dir = tempDir();
  const target = path.join(dir, 'lora');
  const fill = (d: string) => fs.writeFileSync(path.join(d, 'adapter_config.json'), '{}');
  writeDirAtomic(target, fill);
  writeDirAtomic(target, fill, { replace: true }); // its own files: replaced
  fs.writeFileSync(path.join(target, 'thesis.tex'), 'years of work');
  assert.throws(
    () => writeDirAtomic(target, fill, { replace: true }),
    /holds 'thesis\.tex', which mixlora did not write/,
  );
  assert.equal(fs.readFileSync(path.join(target, 'thesis.tex'), 'utf8'), 'years of work');
  assert.deepEqual(fs.readdirSync(dir), ['lora']); // no temporary folder left behind
});

test("case 3: a second run into the same output_dir exits 1 naming the holder; a killed run's lock is taken over", async () => {
  const data = commonsenseSlice('boolq.train', 16);
  const c = writeConfig({
    save_steps: 1,
    adapters: [adapter('lora', data, { max_steps: 400, num_epochs: 100, batch_size: 1 })],
  });
  const run = path.join(c.dir, 'run');
  const child = spawn(process.execPath, [MIXLORA_BIN, 'train', c.file, '--quiet'], {
    env: { ...process.env, ...env },
    stdio: 'ignore',
  });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  try {
    await waitFor(() => fs.existsSync(path.join(run, 'metrics.jsonl')), child);
    for (const args of [[], ['--resume']]) {
      const r = mixlora(['train', c.file, '--quiet', ...args], { env });
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, new RegExp(`already using this folder \\(process ${child.pid} on `));
    }
    assert.ok(child.exitCode === null, 'the first run was disturbed');
  } finally {
    child.kill('SIGTERM');
  }
  await exited;
  // Killed by a signal: its lock is stale (the pid is gone) and the next run takes it over.
  const lock = acquireRunLock(run);
  assert.equal(JSON.parse(fs.readFileSync(lock.file, 'utf8')).pid, process.pid);
  lock.release();
  assert.ok(!fs.existsSync(lock.file));
});

test('case 3: a lock left by a dead process is taken over; a live one is not', () => {
  const dir = tempDir();
  const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  const lockFile = path.join(dir, LOCK_FILE);
  fs.writeFileSync(lockFile, JSON.stringify({ pid: Number(dead.stdout), host: os.hostname(), started: 'x' }));
  const lock = acquireRunLock(dir);
  assert.equal(JSON.parse(fs.readFileSync(lockFile, 'utf8')).pid, process.pid);
  // Held by a live process (this one, as another run would see it).
  const other = spawnSync(
    process.execPath,
    [
      '--input-type=module',
      '-e',
      `import('${pathToImport('src/io/run-lock.js')}').then(m => m.acquireRunLock(${JSON.stringify(dir)}))`,
    ],
    { encoding: 'utf8' },
  );
  assert.notEqual(other.status, 0);
  assert.match(other.stderr, new RegExp(`already using this folder \\(process ${process.pid} on`));
  lock.release();
  assert.ok(!fs.existsSync(lockFile));
});

test('case 4: --resume of a run killed before its first checkpoint starts fresh metrics', () => {
  const data = commonsenseSlice('boolq.train', 8);
  const c = writeConfig({ adapters: [adapter('lora', data, { max_steps: 3 })] });
  const run = path.join(c.dir, 'run');
  fs.mkdirSync(run);
  // What a run killed after 2 steps (no checkpoint yet) leaves.
  const old = [1, 2].map((step) => JSON.stringify({ adapter: 'lora', step, loss: 99, aux: null }));
  fs.writeFileSync(path.join(run, 'metrics.jsonl'), old.join('\n') + '\n');
  fs.writeFileSync(path.join(run, 'train_config.json'), '{}\n');
  // An evaluation report of the run (`eval --out run/eval`) is one of its own files.
  writeFile(path.join(run, 'eval', 'results.md'));
  const r = mixlora(['train', c.file, '--quiet', '--resume'], { env });
  assert.equal(r.code, 0, r.stderr);
  const lines = fs
    .readFileSync(path.join(run, 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { adapter: string; step: number; loss: number });
  assert.deepEqual(
    lines.map((l) => l.step),
    [1, 2, 3],
  );
  assert.ok(lines.every((l) => l.loss !== 99));
  assert.ok(!fs.existsSync(path.join(run, LOCK_FILE)));
});

function writeFile(file: string): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, 'user data');
}

function pathToImport(rel: string): string {
  return path.join(path.dirname(new URL(import.meta.url).pathname), '..', '..', rel);
}

async function waitFor(cond: () => boolean, child: { exitCode: number | null }): Promise<void> {
  for (let i = 0; i < 6000; i++) {
    if (cond()) return;
    if (child.exitCode !== null) throw new Error('the run ended early');
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error('timed out waiting');
}
