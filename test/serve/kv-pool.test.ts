// The KV pool's decode-step caches (src/serve/kv-pool.ts): what a step's attention reads equals each row's
// cached positions right-aligned (the gap holding its position 0) plus the step's new column; the step
// buffer kept from step to step holds the same as a fresh gather; a slot that another sequence acquired is
// gathered again, never read from the buffer of the sequence before it.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as T from '../../src/tensor/index.js';
import { llamaConfig } from '../../src/models/random.js';
import { KVPool } from '../../src/serve/kv-pool.js';

const config = llamaConfig({ vocab: 32, hidden: 16, intermediate: 32, layers: 2, heads: 2, kvHeads: 1 }); // D 8
const D = config.headDim;

/** Fills `slot`'s positions 0..len-1 (through a prefill cache) with values v(slot, p) = 100·tag + p. */
function prefill(pool: KVPool, slot: number, len: number, tag: number): void {
  T.tidy(() => {
    const cache = pool.prefillCache(slot);
    const k = T.tensor(
      Array.from({ length: len * D }, (_, i) => 100 * tag + Math.floor(i / D)),
      {
        shape: [1, 1, len, D],
      },
    ); // [1, nKV, len, D]
    for (let l = 0; l < config.numLayers; l++) cache.update(l, k, k.neg());
  });
}

/** One step over rows (slot, len, tag): the keys layer 0's attention reads, [B, S + 1] (first of D). */
function step(pool: KVPool, rows: { slot: number; len: number; tag: number }[]): number[][] {
  return T.tidy(() => {
    const { cache } = pool.stepCache(rows);
    const fresh = T.tensor(
      rows.flatMap(({ tag, len }) => new Array<number>(D).fill(100 * tag + len)),
      { shape: [rows.length, 1, 1, D] },
    ); // [B, nKV, 1, D]: the new position's value
    let read: number[][] = [];
    for (let l = 0; l < config.numLayers; l++) {
      const [k, v] = cache.update(l, fresh, fresh.neg()); // [B, nKV, S + 1, D]
      assert.deepEqual(v.neg().toFloat32Array(), k.contiguous().toFloat32Array(), 'values as the keys');
      if (l === 0) read = k.select(1, 0).select(2, 0).toList() as number[][];
    }
    cache.advance(1);
    return read;
  });
}

/** What a step must read: each row right-aligned, the gap holding its position 0. */
function expected(rows: { len: number; tag: number }[]): number[][] {
  const S = Math.max(...rows.map((r) => r.len));
  return rows.map(({ len, tag }) =>
    Array.from({ length: S + 1 }, (_, j) => 100 * tag + (j < S - len ? 0 : j - (S - len))),
  );
}

test('decode steps read each row right-aligned, kept from step to step, rebuilt when a slot changes hands', () => {
  const live = T.liveTensors();
  const pool = new KVPool(config, 3, 'float32', 'cpu');
  const a = { slot: pool.acquire(6), len: 5, tag: 1 };
  const b = { slot: pool.acquire(6), len: 2, tag: 2 };
  prefill(pool, a.slot, a.len, a.tag);
  prefill(pool, b.slot, b.len, b.tag);
  for (let i = 0; i < 4; i++) {
    assert.deepEqual(step(pool, [a, b]), expected([a, b]), `step ${i}`);
    a.len += 1;
    b.len += 1;
  }
  // b leaves; c takes its slot with the length b would have had: same slots and gaps, other data.
  pool.release(b.slot);
  const c = { slot: pool.acquire(b.len + 1), len: b.len, tag: 3 };
  assert.equal(c.slot, b.slot);
  prefill(pool, c.slot, c.len, c.tag);
  assert.deepEqual(step(pool, [a, c]), expected([a, c]), 'the new sequence in the old slot');
  a.len += 1;
  c.len += 1;
  assert.deepEqual(step(pool, [c, a]), expected([c, a]), 'rows in another order');
  pool.dispose();
  assert.equal(T.liveTensors(), live);
});
