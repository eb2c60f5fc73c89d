// safetensors: exact round trip, and every kind of bad file refused with an error naming it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { tempDir } from '../helpers/fixtures.js';
import * as T from '../../src/tensor/index.js';
import { loadAll, readHeader, saveSafetensors } from '../../src/io/safetensors.js';
import { UserError } from '../../src/util/errors.js';

function rawFile(dir: string, header: unknown, data: Buffer, opts: { lengthOverride?: bigint } = {}): string {
  const h = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(opts.lengthOverride ?? BigInt(h.length));
  const f = path.join(dir, `f${Math.random().toString(36).slice(2)}.safetensors`);
  fs.writeFileSync(f, Buffer.concat([len, h, data]));
  return f;
}

test('round trip of every dtype is bit-exact; metadata kept; data 8-byte aligned', () =>
  T.tidy(() => {
    const dir = tempDir();
    const file = path.join(dir, 'a.safetensors');
    const tensors = {
      f32: T.randn([3, 4]),
      f16: T.randn([5]).to('float16'),
      bf16: T.randn([2, 2]).to('bfloat16'),
      i64: T.tensor([1, -2, 3], { dtype: 'int64' }),
      u8: T.tensor([1, 255], { dtype: 'uint8' }),
      b: T.tensor([true, false]),
      empty: T.zeros([0, 3]),
      scalar: T.tensor(2.5),
    };
    saveSafetensors(file, tensors, { format: 'pt' });
    const { tensors: back, metadata } = loadAll(file);
    assert.deepEqual(metadata, { format: 'pt' });
    for (const [k, t] of Object.entries(tensors)) {
      const b = back.get(k)!;
      assert.equal(b.dtype, t.dtype, k);
      assert.deepEqual(b.shape, t.shape, k);
      assert.deepEqual(
        Array.from(b.toTypedArray() as ArrayLike<number>),
        Array.from(t.toTypedArray() as ArrayLike<number>),
        k,
      );
    }
    const n = fs.readFileSync(file).readBigUInt64LE(0);
    assert.equal((8n + n) % 8n, 0n);
    for (const t of back.values()) t.dispose();
  }));

test('bad files are refused with one clear error naming the file', () => {
  const dir = tempDir();
  const f32 = (shape: number[], begin: number, end: number) => ({ dtype: 'F32', shape, data_offsets: [begin, end] });
  const cases: [string, string, RegExp][] = [
    [
      'too short',
      (() => {
        const f = path.join(dir, 'short');
        fs.writeFileSync(f, Buffer.from([1, 2]));
        return f;
      })(),
      /too short/,
    ],
    ['header length past the end', rawFile(dir, {}, Buffer.alloc(0), { lengthOverride: 1000n }), /runs past the end/],
    ['huge header length', rawFile(dir, {}, Buffer.alloc(0), { lengthOverride: 2n ** 62n }), /over the 100 MiB limit/],
    ['not JSON', rawFile(dir, '{"a": ', Buffer.alloc(0)), /not JSON/],
    ['not an object', rawFile(dir, '[1,2]', Buffer.alloc(0)), /not a JSON object/],
    [
      'bad dtype',
      rawFile(dir, { a: { dtype: 'F8_E4M3', shape: [1], data_offsets: [0, 1] } }, Buffer.alloc(1)),
      /unsupported dtype/,
    ],
    [
      'bad shape',
      rawFile(dir, { a: { dtype: 'F32', shape: [-1], data_offsets: [0, 4] } }, Buffer.alloc(4)),
      /invalid shape/,
    ],
    ['offsets reversed', rawFile(dir, { a: f32([1], 4, 0) }, Buffer.alloc(4)), /invalid data_offsets/],
    ['size mismatch', rawFile(dir, { a: f32([2], 0, 4) }, Buffer.alloc(8)), /needs 8 bytes but data_offsets give 4/],
    ['truncated data', rawFile(dir, { a: f32([4], 0, 16) }, Buffer.alloc(8)), /outside the data section.*truncated/],
    ['overlap', rawFile(dir, { a: f32([2], 0, 8), b: f32([2], 4, 12) }, Buffer.alloc(12)), /overlap/],
    ['metadata not strings', rawFile(dir, { __metadata__: { a: 1 } }, Buffer.alloc(0)), /__metadata__/],
  ];
  for (const [what, file, re] of cases) {
    assert.throws(
      () => readHeader(file),
      (e: unknown) => e instanceof UserError && e.message.includes(file) && re.test(e.message),
      what,
    );
  }
  assert.throws(() => readHeader(path.join(dir, 'missing.safetensors')), /cannot open/);
});
