// Where test inputs live: reference fixtures written by the PyTorch script, bundled assets, temp dirs.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { packageRoot } from '../../src/util/package.js';

export const ROOT = packageRoot();
export const STORIES_BIN = path.join(ROOT, 'assets', 'models', 'stories260K', 'stories260K.bin');
export const STORIES_TOK = path.join(ROOT, 'assets', 'models', 'stories260K', 'tok512.bin');
export const MIXLORA_BIN = path.join(ROOT, 'bin', 'mixlora');

/** build/reference, written by `.venv/bin/python test/reference/generate.py build/reference` (make test runs it). */
export function referenceDir(...parts: string[]): string {
  const dir = path.join(ROOT, 'build', 'reference');
  if (!fs.existsSync(path.join(dir, 'models', 'index.json'))) {
    throw new Error(
      `reference fixtures missing in ${dir}: run \`make test\` (it runs test/reference/generate.py with the .venv's PyTorch)`,
    );
  }
  return path.join(dir, ...parts);
}

const made: string[] = [];

/** A fresh folder under the system's temp dir, removed when the test process exits (each test file runs
 * in its own process), so that test runs leave nothing behind. */
export function tempDir(prefix = 'mixlora-test-'): string {
  if (made.length === 0) process.once('exit', removeTempDirs);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  made.push(dir);
  return dir;
}

function removeTempDirs(): void {
  for (const dir of made.splice(0)) {
    try {
      fs.rmSync(dir, { recursive: true, force: true });
    } catch {
      // A folder a test made read-only or still in use stays; the run's result does not depend on it.
    }
  }
}
