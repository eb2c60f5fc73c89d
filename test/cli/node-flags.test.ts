// bin/mixlora starts Node with src/util/node-flags.ts's flags (its first line), and runs when executed
// directly, as users do (`env -S` splits the line's arguments).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { test } from 'node:test';
import { MIXLORA_BIN } from '../helpers/fixtures.js';
import { NODE_FLAGS } from '../../src/util/node-flags.js';
import { packageVersion } from '../../src/util/package.js';

test("bin/mixlora's first line passes the Node flags, and the file runs as an executable", () => {
  const first = fs.readFileSync(MIXLORA_BIN, 'utf8').split('\n')[0];
  assert.equal(first, `#!/usr/bin/env -S node ${NODE_FLAGS.join(' ')}`);
  assert.equal(execFileSync(MIXLORA_BIN, ['--version'], { encoding: 'utf8' }).trim(), packageVersion());
  // This Node accepts them (V8 refuses an unknown flag at startup).
  execFileSync(process.execPath, [...NODE_FLAGS, '-e', '0']);
});
