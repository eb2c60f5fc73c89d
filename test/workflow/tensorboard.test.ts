// TensorBoard event files as TensorBoard's own reader (the tensorboard pip package's
// EventAccumulator) sees them; the frames' CRC32C against the published check value.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { tempDir } from '../helpers/fixtures.js';
import { missingModule, READ_SCALARS, runPython } from '../helpers/python.js';
import { crc32c, EventWriter } from '../../src/io/tensorboard.js';

test('CRC32C matches the check value of RFC 3720 (iSCSI) and the standard "123456789" vector', () => {
  assert.equal(crc32c(Buffer.from('123456789')), 0xe3069283);
  assert.equal(crc32c(Buffer.alloc(32)), 0x8a9136aa);
});

test("TensorBoard's reader reads our scalars back", (t) => {
  const missing = missingModule('tensorboard');
  if (missing) return t.skip(missing);
  const dir = path.join(tempDir(), 'run');
  const w = new EventWriter(dir);
  w.scalars(1, { 'train/loss': 2.5, 'train/lr': 1e-4, skipped: null });
  w.scalars(2, { 'train/loss': 2.25, 'train/lr': 2e-4, nan: NaN });
  w.scalars(3_000_000_000, { 'eval/loss': -0.125 });
  const got = JSON.parse(runPython(READ_SCALARS, [dir])) as Record<string, Record<string, [number, number][]>>;
  assert.deepEqual(got[dir], {
    'train/loss': [
      [1, 2.5],
      [2, 2.25],
    ],
    'train/lr': [
      [1, Math.fround(1e-4)],
      [2, Math.fround(2e-4)],
    ],
    'eval/loss': [[3_000_000_000, -0.125]],
  });
});
