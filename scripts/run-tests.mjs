#!/usr/bin/env node
// Runs the compiled test suite (dist/test/**/*.test.js) with node's built-in runner, whose summary
// counts the tests that passed. Extra arguments filter test files by substring; --skip=a,b leaves out the
// files whose path under dist/test, with a leading slash (/serve/lm-eval.test.js), contains a or b.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const dir = path.join(root, 'dist', 'test');
const args = process.argv.slice(2);
const skips = args
  .filter((a) => a.startsWith('--skip='))
  .flatMap((a) => a.slice('--skip='.length).split(','))
  .map((s) => s.trim())
  .filter((s) => s !== '');
const filters = args.filter((a) => !a.startsWith('--skip='));
const files = [];
const walk = (d) => {
  for (const e of fs.readdirSync(d, { withFileTypes: true })) {
    const p = path.join(d, e.name);
    if (e.isDirectory()) walk(p);
    else if (
      e.name.endsWith('.test.js') &&
      (filters.length === 0 || filters.some((f) => p.includes(f))) &&
      !skips.some((f) => `/${path.relative(dir, p)}`.includes(f))
    )
      files.push(p);
  }
};
if (!fs.existsSync(dir)) {
  console.error('no compiled tests: run `make setup` first');
  process.exit(1);
}
walk(dir);
files.sort();
// Without files node's runner would look for tests itself and run them all.
if (files.length === 0) {
  console.error(`no compiled test file matches ${filters.join(', ')}`);
  process.exit(1);
}
// Each test file runs in its own process; two at a time on two cores, each with one torch thread.
const r = spawnSync(process.execPath, ['--expose-gc', '--test', '--test-concurrency=2', ...files], {
  stdio: 'inherit',
  env: { MIXLORA_NUM_THREADS: '1', ...process.env },
});
process.exit(r.status ?? 1);
