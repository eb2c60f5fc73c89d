// Ownership: scopes free what they created, keep() and returns escape, and a training-like loop
// leaves neither tensors nor memory behind.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as T from '../../src/tensor/index.js';
import { AdamW } from '../../src/optim/index.js';

test('tidy frees intermediates, passes returned tensors (nested in objects) to the parent scope', () => {
  const before = T.liveTensors();
  const out = T.tidy(() => {
    const a = T.ones([4]);
    const b = a.mul(2);
    const inner = T.tidy(() => ({ x: b.add(1), list: [b.sub(1)] }));
    assert.equal(inner.x.isDisposed, false);
    return { sum: inner.x.add(inner.list[0]!) };
  });
  assert.deepEqual(out.sum.toNumbers(), [4, 4, 4, 4]);
  assert.equal(T.liveTensors(), before + 1);
  out.sum.dispose();
  assert.equal(T.liveTensors(), before);
});

test('keep() exempts a tensor from scopes; dispose() is idempotent', () => {
  const before = T.liveTensors();
  let kept: T.Tensor | undefined;
  T.tidy(() => {
    kept = T.ones([2]).keep();
    T.ones([2]);
  });
  assert.equal(T.liveTensors(), before + 1);
  assert.deepEqual(kept!.toNumbers(), [1, 1]);
  kept!.dispose();
  assert.equal(T.liveTensors(), before);
  const t = T.ones([1]);
  t.dispose();
  t.dispose();
});

test('a throwing function still frees its scope', () => {
  const before = T.liveTensors();
  assert.throws(
    () =>
      T.tidy(() => {
        T.ones([3]);
        throw new Error('boom');
      }),
    /boom/,
  );
  assert.equal(T.liveTensors(), before);
});

test('views share storage and are counted once as external memory', () => {
  const base = T.externalBytes();
  const a = T.zeros([32768]); // 128 KiB: tracked (small ones are not)
  const v = a.narrow(0, 0, 10);
  assert.equal(T.externalBytes() - base, 131072);
  a.dispose();
  assert.equal(T.externalBytes() - base, 131072, 'the view keeps the storage alive');
  v.dispose();
  assert.equal(T.externalBytes(), base);
});

test('leak test: 2,000 forward+backward+AdamW steps leave the tensor count unchanged and RSS flat', () => {
  T.manualSeed(0);
  const w1 = T.randn([64, 32]).mul(0.1).keep().requiresGrad_();
  const w2 = T.randn([8, 64]).mul(0.1).keep().requiresGrad_();
  const opt = new AdamW([w1, w2], { lr: 1e-3 });
  const x = T.randn([16, 32]).keep();
  const y = T.randint(0, 8, [16]).keep();
  const step = () => {
    T.tidy(() => {
      const h = T.linear(x, w1).silu(); // [16, 64]
      const logits = T.linear(h, w2); // [16, 8]
      T.crossEntropy(logits, y).backward();
    });
    opt.step();
    opt.zeroGrad();
  };
  for (let i = 0; i < 200; i++) step(); // warm-up: allocator pools settle
  global.gc?.();
  const count = T.liveTensors();
  const rss = process.memoryUsage().rss;
  for (let i = 0; i < 2000; i++) step();
  global.gc?.();
  const grown = (process.memoryUsage().rss - rss) / 2 ** 20;
  assert.equal(T.liveTensors(), count, 'live tensors changed');
  // Bound: 16 MiB. One leaked step here holds ~30 KB, so 2,000 leaked steps would show ~60 MiB.
  assert.ok(grown < 16, `RSS grew by ${grown.toFixed(1)} MiB`);
  opt.dispose();
  for (const t of [w1, w2, x, y]) t.dispose();
});
