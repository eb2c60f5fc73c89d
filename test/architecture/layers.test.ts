// The one-way doors of docs/architecture.md §2: each room of src/ imports only from rooms below it (or
// from its own room). Every relative import of every source file is checked, lazy `import()` included.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import test from 'node:test';
import { ROOT } from '../helpers/fixtures.js';

/** The rooms from the bottom up: the folders of src/ in each. Keep in step with docs/architecture.md. */
const ROOMS: string[][] = [
  ['util'],
  ['tensor', 'optim', 'distributed'],
  ['io'],
  ['nn', 'tokenizer', 'quant'],
  ['models'],
  ['adapters'],
  ['data'],
  ['eval'],
  ['train'],
  ['generate', 'serve', 'bench'],
  ['cli', 'api', 'studio'],
];
const SRC = path.join(ROOT, 'src');

function roomOf(folder: string): number {
  const i = ROOMS.findIndex((room) => room.includes(folder));
  assert.notEqual(i, -1, `src/${folder} belongs to no room: add it to ROOMS and to docs/architecture.md`);
  return i;
}

function sourceFiles(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return sourceFiles(p);
    return e.name.endsWith('.ts') ? [p] : [];
  });
}

/** The relative modules a file imports: `from '...'` (import and export) and `import('...')`. */
function relativeImports(file: string): string[] {
  const text = fs.readFileSync(file, 'utf8');
  const specs = [...text.matchAll(/(?:from\s+|import\s*\(\s*)'(\.[^']*)'/g)].map((m) => m[1]!);
  return specs.map((s) => path.resolve(path.dirname(file), s));
}

test('each room of src/ imports only from itself and the rooms below it', () => {
  const wrong: string[] = [];
  for (const file of sourceFiles(SRC)) {
    const rel = path.relative(SRC, file);
    if (!rel.includes(path.sep)) continue; // src/index.ts: the public surface, above every room
    const from = rel.split(path.sep)[0]!;
    for (const target of relativeImports(file)) {
      const to = path.relative(SRC, target).split(path.sep)[0]!;
      if (!to.includes('.') && roomOf(to) > roomOf(from))
        wrong.push(`${rel} imports ${path.relative(SRC, target)} (${to} is above ${from})`);
    }
  }
  assert.deepEqual(wrong, []);
});
