// The paged KV cache's parts: the block pool (reference counts, the prefix cache's hashes, least recently
// used eviction of cached blocks), the decode kernel that reads blocks in place (against attention over
// the same keys gathered, with grouped heads, shuffled block tables, partial blocks and sliding windows),
// and a prefill over a cached prefix (a model's logits equal one forward over the whole sequence).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as T from '../../src/tensor/index.js';
import { llamaConfig, randomModel } from '../../src/models/random.js';
import { BLOCK_SIZE, BlockPool, blocksFor } from '../../src/serve/block-pool.js';
import { extendBlockHashes } from '../../src/serve/block-hash.js';
import { decodeCache, prefillCache } from '../../src/serve/paged-cache.js';
import { pagedAttention, scaledDotProductAttention } from '../../src/tensor/ops.js';
import { Rng } from '../../src/util/random.js';

const config = llamaConfig({ vocab: 64, hidden: 32, intermediate: 64, layers: 2, heads: 4, kvHeads: 2 }); // D 8

test('block pool: reference counts, registered blocks found by hash, cached blocks evicted least recently used', () => {
  const pool = new BlockPool(config, 4, 'float32', 'cpu');
  const [a, b, c, d] = [pool.allocate()!, pool.allocate()!, pool.allocate()!, pool.allocate()!];
  assert.deepEqual([a, b, c, d], [0, 1, 2, 3], 'lowest ids first');
  assert.equal(pool.allocate(), null, 'all held');
  pool.register(a, 'h-a');
  pool.register(b, 'h-b');
  assert.equal(pool.lookup('h-a'), a, 'a hit takes a held block too');
  pool.release(a);
  pool.release(a); // no holder left: cached
  pool.release(b); // cached
  pool.release(c); // not registered: free
  assert.equal(pool.available, 3);
  assert.equal(pool.cachedIdle, 2);
  assert.equal(pool.allocate(), c, 'a free block before any cached one');
  assert.equal(pool.lookup('h-b'), b, 'a cached block is found again');
  pool.release(b);
  // a was cached before b was used again: a is the least recently used, evicted first.
  assert.equal(pool.allocate(), a);
  assert.equal(pool.lookup('h-a'), null, 'an evicted block is forgotten');
  assert.equal(pool.lookup('h-b'), b);
  assert.throws(() => {
    pool.release(d);
    pool.release(d);
  }, /released more often/);
});

test('block hashes chain the identity and every token before: same prefix same hashes, another adapter others', () => {
  const tokens = Array.from({ length: 3 * BLOCK_SIZE + 5 }, (_, i) => i % 7);
  const h1: string[] = [];
  extendBlockHashes('base', tokens, h1);
  assert.equal(h1.length, 3, 'full blocks only');
  const h2: string[] = [];
  extendBlockHashes('base', [...tokens.slice(0, 2 * BLOCK_SIZE), 99, ...tokens.slice(2 * BLOCK_SIZE + 1)], h2);
  assert.deepEqual(h2.slice(0, 2), h1.slice(0, 2));
  assert.notEqual(h2[2], h1[2]);
  const other: string[] = [];
  extendBlockHashes('adapter-1', tokens, other);
  assert.ok(
    other.every((h, i) => h !== h1[i]),
    'the adapter is part of every hash',
  );
  // Extending continues where it stopped.
  const grown = h1.slice(0, 1);
  extendBlockHashes('base', tokens, grown);
  assert.deepEqual(grown, h1);
});

/** Random keys and values for rows of `lens` positions in a pool whose blocks are handed out shuffled. */
function filledPool(lens: number[], seed: number) {
  const rng = new Rng(seed);
  const perRow = lens.map((n) => blocksFor(n));
  const total = perRow.reduce((a, b) => a + b, 0) + 3;
  const pool = new BlockPool(config, total, 'float32', 'cpu');
  pool.ensureAllocated();
  const ids = Array.from({ length: total }, (_, i) => i).sort(() => (rng.next() % 2 === 0 ? 1 : -1));
  const tables = perRow.map((n) => ids.splice(0, n));
  T.manualSeed(seed);
  // Every block's contents random (written positions and the rest alike).
  for (const t of [...pool.keys, ...pool.values]) T.tidy(() => t.copy_(T.randn([...t.shape])));
  return { pool, tables };
}

/** A row's keys (or values) of one layer gathered contiguously: [nKV, len, D]. */
function gathered(layerPool: T.Tensor, blocks: number[], len: number): T.Tensor {
  const parts = blocks.map((b) => layerPool.select(0, b)); // [nKV, bs, D] each
  return T.cat(parts, 1).narrow(1, 0, len); // [nKV, len, D]
}

test('the paged decode kernel equals attention over the gathered keys (grouped heads, windows, partial blocks)', () => {
  const live = T.liveTensors();
  const lens = [1, BLOCK_SIZE, BLOCK_SIZE + 1, 3 * BLOCK_SIZE + 7, 40];
  const { pool, tables } = filledPool(lens, 5);
  T.noGrad(() =>
    T.tidy(() => {
      const q = T.randn([lens.length, config.numHeads, 1, config.headDim]); // [B, H, 1, D]
      const int64 = { dtype: 'int64' as const };
      const M = Math.max(...tables.map((t) => t.length));
      const tableT = T.tensor(
        tables.map((t) => [...t, ...new Array<number>(M - t.length).fill(0)]),
        int64,
      );
      const lensT = T.tensor(lens, int64);
      for (const window of [null, 5, BLOCK_SIZE + 3]) {
        const scale = 0.3;
        const got = pagedAttention(q, pool.keys[1]!, pool.values[1]!, tableT, lensT, { window, scale }); // [B, H, 1, D]
        lens.forEach((len, b) => {
          const from = window === null ? 0 : Math.max(0, len - window);
          const k = gathered(pool.keys[1]!, tables[b]!, len).narrow(1, from, len - from); // [nKV, S, D]
          const v = gathered(pool.values[1]!, tables[b]!, len).narrow(1, from, len - from);
          const rep = config.numHeads / config.numKvHeads;
          const S = len - from;
          const kk = k
            .unsqueeze(1)
            .expand(config.numKvHeads, rep, S, config.headDim)
            .reshape(1, config.numHeads, S, config.headDim);
          const vv = v
            .unsqueeze(1)
            .expand(config.numKvHeads, rep, S, config.headDim)
            .reshape(1, config.numHeads, S, config.headDim);
          const want = scaledDotProductAttention(q.narrow(0, b, 1).mul(scale * Math.sqrt(config.headDim)), kk, vv); // [1, H, 1, D]
          const diff = got.narrow(0, b, 1).sub(want).abs().amax().item();
          assert.ok(diff < 1e-5, `row ${b} (len ${len}, window ${window}): ${diff}`);
        });
      }
      // A row's result does not depend on the rows beside it.
      const alone = pagedAttention(
        q.narrow(0, 3, 1).contiguous(),
        pool.keys[0]!,
        pool.values[0]!,
        tableT.narrow(0, 3, 1).contiguous(),
        lensT.narrow(0, 3, 1).contiguous(),
        { window: null, scale: 0.35 },
      );
      const batched = pagedAttention(q, pool.keys[0]!, pool.values[0]!, tableT, lensT, { window: null, scale: 0.35 });
      assert.deepEqual(alone.toFloat32Array(), batched.narrow(0, 3, 1).contiguous().toFloat32Array());
      assert.throws(
        () =>
          pagedAttention(
            q,
            pool.keys[0]!,
            pool.values[0]!,
            tableT,
            T.tensor(
              lens.map((l) => l + 100),
              int64,
            ),
            { window: null, scale: 1 },
          ),
        /exceeds its blocks/,
      );
    }),
  );
  pool.dispose();
  assert.equal(T.liveTensors(), live);
});

test('a prefill over cached prefixes (rows of other lengths beside it) and decode steps equal plain forwards', () => {
  const live = T.liveTensors();
  const model = randomModel(config, { seed: 3 });
  const rng = new Rng(9);
  const seqs = [37, 2 * BLOCK_SIZE + 1, 20].map((n) => Array.from({ length: n }, () => 3 + (rng.next() % 60)));
  const pool = new BlockPool(config, 20, 'float32', 'cpu');
  pool.ensureAllocated();
  const tables = seqs.map((s) => Array.from({ length: blocksFor(s.length + 2) }, () => pool.allocate()!));
  T.noGrad(() => {
    // Plain forwards: every position's logits of each sequence alone.
    const full = seqs.map((s) =>
      T.tidy(() =>
        model
          .forward(T.tensor([s], { dtype: 'int64' }))
          .select(0, 0)
          .keep(),
      ),
    ); // [P, V]
    // 1: each row's first part (its "cached prefix"), of different lengths, in one batch.
    const firsts = [BLOCK_SIZE, BLOCK_SIZE, 0];
    T.tidy(() => {
      const rows = seqs
        .map((_s, i) => ({ blocks: tables[i]!, cached: 0, fresh: firsts[i]! }))
        .filter((r) => r.fresh > 0);
      const N = BLOCK_SIZE;
      const ids = T.tensor(
        rows.map((_, i) => seqs[i]!.slice(0, BLOCK_SIZE)),
        { dtype: 'int64' },
      );
      const paged = prefillCache(pool, config, rows, N);
      model.lastHidden(ids, { attentionMask: paged.keyMask, cache: paged.cache });
    });
    // 2: the rest of every row after its cached part (left-padded), in one batch: its logits equal the plain ones.
    T.tidy(() => {
      const rows = seqs.map((s, i) => ({ blocks: tables[i]!, cached: firsts[i]!, fresh: s.length - firsts[i]! }));
      const N = Math.max(...rows.map((r) => r.fresh));
      const ids = T.tensor(
        rows.map((r, i) => [...new Array<number>(N - r.fresh).fill(0), ...seqs[i]!.slice(r.cached)]),
        { dtype: 'int64' },
      );
      const paged = prefillCache(pool, config, rows, N);
      const h = model.lastHidden(ids, { attentionMask: paged.keyMask, cache: paged.cache }); // [B, N, H]
      paged.storeHidden(h);
      rows.forEach((r, i) => {
        const got = model.head(h.select(0, i).narrow(0, N - r.fresh, r.fresh)); // [fresh, V]
        const want = full[i]!.narrow(0, r.cached, r.fresh);
        const diff = got.sub(want).abs().amax().item();
        assert.ok(diff < 1e-4, `row ${i}: ${diff}`);
      });
    });
    // 3: one decode step for every row (new tokens at their lengths) equals the plain forward of the longer sequences.
    const next = seqs.map((_, i) => 5 + i);
    T.tidy(() => {
      const rows = seqs.map((s, i) => ({ blocks: tables[i]!, len: s.length }));
      const paged = decodeCache(pool, config, rows);
      const h = model.lastHidden(
        T.tensor(
          next.map((t) => [t]),
          { dtype: 'int64' },
        ),
        {
          attentionMask: paged.keyMask,
          positions: paged.positions,
          cache: paged.cache,
        },
      ); // [B, 1, H]
      seqs.forEach((s, i) => {
        const want = T.tidy(() =>
          model.forward(T.tensor([[...s, next[i]!]], { dtype: 'int64' }), { lastOnly: true }).reshape(-1),
        );
        const diff = model.head(h.select(0, i)).reshape(-1).sub(want).abs().amax().item();
        assert.ok(diff < 1e-4, `decode row ${i}: ${diff}`);
      });
    });
    for (const t of full) t.dispose();
  });
  pool.dispose();
  model.dispose();
  assert.equal(T.liveTensors(), live);
});
