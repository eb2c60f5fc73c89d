// Op results against values computed by hand.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { assertClose } from '../helpers/assert.js';
import * as T from '../../src/tensor/index.js';

test('creation: nested arrays, typed arrays, fills, ranges, dtypes', () =>
  T.tidy(() => {
    const a = T.tensor([
      [1, 2, 3],
      [4, 5, 6],
    ]);
    assert.deepEqual(a.shape, [2, 3]);
    assert.equal(a.dtype, 'float32');
    assert.deepEqual(a.toList(), [
      [1, 2, 3],
      [4, 5, 6],
    ]);
    const i = T.tensor(new BigInt64Array([1n, -2n, 3n]));
    assert.equal(i.dtype, 'int64');
    assert.deepEqual(i.toNumbers(), [1, -2, 3]);
    assert.deepEqual(T.tensor([true, false]).toList(), [1, 0]);
    assert.equal(T.tensor([true, false]).dtype, 'bool');
    assert.deepEqual(T.zeros([2]).toNumbers(), [0, 0]);
    assert.deepEqual(T.ones([2], { dtype: 'int32' }).toNumbers(), [1, 1]);
    assert.deepEqual(T.full([3], 2.5).toNumbers(), [2.5, 2.5, 2.5]);
    assert.deepEqual(T.arange(4).toNumbers(), [0, 1, 2, 3]);
    assert.equal(T.arange(4).dtype, 'int64');
    assert.deepEqual(T.arange(1, 2, 0.25, { dtype: 'float64' }).toNumbers(), [1, 1.25, 1.5, 1.75]);
    assert.deepEqual(T.eye(2).toList(), [
      [1, 0],
      [0, 1],
    ]);
    for (const dtype of ['float32', 'float64', 'float16', 'bfloat16', 'int64', 'int32', 'uint8', 'bool'] as const) {
      const t = T.tensor([0, 1, 2], { dtype });
      assert.equal(t.dtype, dtype);
      assert.deepEqual(t.toNumbers(), dtype === 'bool' ? [0, 1, 1] : [0, 1, 2], dtype);
    }
    // float16/bfloat16 come out as raw bits: 1.0 is 0x3c00 in half, 0x3f80 in bfloat16.
    assert.deepEqual(Array.from(T.tensor([1], { dtype: 'float16' }).toTypedArray() as Uint16Array), [0x3c00]);
    assert.deepEqual(Array.from(T.tensor([1], { dtype: 'bfloat16' }).toTypedArray() as Uint16Array), [0x3f80]);
    assert.equal(T.tensor(Float32Array.from([1, 2, 3, 4]), { shape: [2, 2] }).shape[1], 2);
    assert.equal(T.tensor(3).ndim, 0);
  }));

test('seeded random numbers repeat; rand is in [0, 1)', () =>
  T.tidy(() => {
    T.manualSeed(7);
    const a = T.randn([5]).toNumbers();
    T.manualSeed(7);
    assert.deepEqual(T.randn([5]).toNumbers(), a);
    const u = T.rand([1000]);
    assert.ok(u.amin().item() >= 0 && u.amax().item() < 1);
    const r = T.randint(3, 5, [100]);
    assert.ok(r.amin().item() >= 3 && r.amax().item() <= 4);
    const s = T.getRngState();
    const x = T.randn([3]).toNumbers();
    T.setRngState(s);
    assert.deepEqual(T.randn([3]).toNumbers(), x);
  }));

test('views: reshape, permute, transpose, narrow, slice, select, (un)squeeze, expand, flatten', () =>
  T.tidy(() => {
    const a = T.arange(6, undefined, 1, { dtype: 'float32' }).reshape(2, 3);
    assert.deepEqual(a.transpose(0, 1).toList(), [
      [0, 3],
      [1, 4],
      [2, 5],
    ]);
    assert.deepEqual(a.permute(1, 0).contiguous().view(6).toNumbers(), [0, 3, 1, 4, 2, 5]);
    assert.deepEqual(a.narrow(1, 1, 2).toList(), [
      [1, 2],
      [4, 5],
    ]);
    assert.deepEqual(a.slice(1, 0, 3, 2).toList(), [
      [0, 2],
      [3, 5],
    ]);
    assert.deepEqual(a.select(0, 1).toNumbers(), [3, 4, 5]);
    assert.deepEqual(a.unsqueeze(0).shape, [1, 2, 3]);
    assert.deepEqual(a.unsqueeze(0).squeeze(0).shape, [2, 3]);
    assert.deepEqual(
      T.tensor([[1], [2]])
        .expand(2, 3)
        .toList(),
      [
        [1, 1, 1],
        [2, 2, 2],
      ],
    );
    assert.deepEqual(a.reshape(1, 2, 3).flatten(1).shape, [1, 6]);
    assert.deepEqual(a.mT.shape, [3, 2]);
    assert.deepEqual(T.ones([3, 3]).tril().toList(), [
      [1, 0, 0],
      [1, 1, 0],
      [1, 1, 1],
    ]);
    assert.deepEqual(T.tensor([1, 2]).repeatInterleave(2, 0).toNumbers(), [1, 1, 2, 2]);
    assert.deepEqual(T.tensor([1, 2]).flip(0).toNumbers(), [2, 1]);
  }));

test('indexing: index_select, gather, scatter_add, index_add, masked_fill, where, nonzero', () =>
  T.tidy(() => {
    const a = T.tensor([
      [1, 2],
      [3, 4],
      [5, 6],
    ]);
    const idx = T.tensor([2, 0], { dtype: 'int64' });
    assert.deepEqual(a.indexSelect(0, idx).toList(), [
      [5, 6],
      [1, 2],
    ]);
    assert.deepEqual(a.gather(1, T.tensor([[1], [0], [1]], { dtype: 'int64' })).toList(), [[2], [3], [6]]);
    const sa = T.zeros([2]).scatterAdd(0, T.tensor([0, 1, 0], { dtype: 'int64' }), T.tensor([1, 2, 3]));
    assert.deepEqual(sa.toNumbers(), [4, 2]);
    const ia = T.zeros([3, 2]).indexAdd(0, T.tensor([0, 0, 2], { dtype: 'int64' }), T.ones([3, 2]));
    assert.deepEqual(ia.toList(), [
      [2, 2],
      [0, 0],
      [1, 1],
    ]);
    const m = T.tensor([true, false, true]);
    assert.deepEqual(T.tensor([1, 2, 3]).maskedFill(m, -1).toNumbers(), [-1, 2, -1]);
    assert.deepEqual(T.where(m, T.tensor([1, 2, 3]), 0).toNumbers(), [1, 0, 3]);
    assert.deepEqual(T.where(m, 9, T.tensor([1, 2, 3])).toNumbers(), [9, 2, 9]);
    assert.deepEqual(m.nonzero().toList(), [[0], [2]]);
    assert.deepEqual(T.tensor([1, 2, 3]).maskedSelect(m).toNumbers(), [1, 3]);
    const c = T.zeros([4, 2]).indexCopy_(0, T.tensor([1, 3], { dtype: 'int64' }), T.ones([2, 2]));
    assert.deepEqual(c.sum(1).toNumbers(), [0, 2, 0, 2]);
  }));

test('joining and splitting: cat, stack, split, chunk', () =>
  T.tidy(() => {
    const a = T.tensor([[1, 2]]);
    const b = T.tensor([[3, 4]]);
    assert.deepEqual(T.cat([a, b], 0).toList(), [
      [1, 2],
      [3, 4],
    ]);
    assert.deepEqual(T.cat([a, b], 1).toList(), [[1, 2, 3, 4]]);
    assert.deepEqual(T.stack([a, b], 0).shape, [2, 1, 2]);
    const parts = T.arange(5).split([2, 3]);
    assert.deepEqual(
      parts.map((p) => p.toNumbers()),
      [
        [0, 1],
        [2, 3, 4],
      ],
    );
    assert.deepEqual(
      T.arange(5)
        .split(2)
        .map((p) => p.numel),
      [2, 2, 1],
    );
    assert.deepEqual(
      T.arange(6)
        .chunk(3)
        .map((p) => p.toNumbers()),
      [
        [0, 1],
        [2, 3],
        [4, 5],
      ],
    );
  }));

test('arithmetic with broadcasting and scalars; dtype promotion', () =>
  T.tidy(() => {
    const a = T.tensor([
      [1, 2],
      [3, 4],
    ]);
    const r = T.tensor([10, 20]);
    assert.deepEqual(a.add(r).toList(), [
      [11, 22],
      [13, 24],
    ]);
    assert.deepEqual(a.add(r, 2).toList(), [
      [21, 42],
      [23, 44],
    ]);
    assert.deepEqual(a.sub(1).toList(), [
      [0, 1],
      [2, 3],
    ]);
    assert.deepEqual(a.mul(r).toList(), [
      [10, 40],
      [30, 80],
    ]);
    assert.deepEqual(a.div(2).toList(), [
      [0.5, 1],
      [1.5, 2],
    ]);
    assert.deepEqual(a.pow(2).toList(), [
      [1, 4],
      [9, 16],
    ]);
    assert.deepEqual(a.rsub(1).toList(), [
      [0, -1],
      [-2, -3],
    ]);
    assert.deepEqual(a.rdiv(12).toList(), [
      [12, 6],
      [4, 3],
    ]);
    assert.deepEqual(a.clamp(2, 3).toList(), [
      [2, 2],
      [3, 3],
    ]);
    assert.deepEqual(a.gt(2).toList(), [
      [0, 0],
      [1, 1],
    ]);
    assert.deepEqual(a.eq(T.tensor([1, 4])).toList(), [
      [1, 0],
      [0, 1],
    ]);
    assert.deepEqual(a.maximum(T.tensor([2, 2])).toList(), [
      [2, 2],
      [3, 4],
    ]);
    const i = T.tensor([1, 2], { dtype: 'int64' });
    assert.equal(i.add(1).dtype, 'int64');
    assert.equal(i.add(T.tensor([0.5, 0.5])).dtype, 'float32');
  }));

test('math functions against their formulas', () =>
  T.tidy(() => {
    const xs = [-2, -0.5, 0, 0.5, 2];
    const x = T.tensor(xs, { dtype: 'float64' });
    const near = (t: T.Tensor, f: (v: number) => number, what: string) =>
      assertClose(t, xs.map(f), { atol: 1e-12, what });
    near(x.exp(), Math.exp, 'exp');
    near(x.tanh(), Math.tanh, 'tanh');
    near(x.sigmoid(), (v) => 1 / (1 + Math.exp(-v)), 'sigmoid');
    near(x.silu(), (v) => v / (1 + Math.exp(-v)), 'silu');
    near(
      x.gelu('tanh'),
      (v) => 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3))),
      'gelu tanh',
    );
    near(x.abs().add(1).log(), (v) => Math.log(Math.abs(v) + 1), 'log');
    near(x.abs().add(1).rsqrt(), (v) => 1 / Math.sqrt(Math.abs(v) + 1), 'rsqrt');
    near(x.abs().sqrt(), (v) => Math.sqrt(Math.abs(v)), 'sqrt');
    near(x.sin(), Math.sin, 'sin');
    near(x.cos(), Math.cos, 'cos');
    // gelu (erf form) at 1: 0.5·(1 + erf(1/√2)) = 0.841344746...
    assertClose(T.tensor([1], { dtype: 'float64' }).gelu(), [0.8413447460685429], { atol: 1e-12 });
  }));

test('reductions: sum, mean, max, amax, logsumexp, norm, var, argmax, cumsum', () =>
  T.tidy(() => {
    const a = T.tensor(
      [
        [1, 5, 3],
        [4, 2, 6],
      ],
      { dtype: 'float64' },
    );
    assert.equal(a.sum().item(), 21);
    assert.deepEqual(a.sum(0).toNumbers(), [5, 7, 9]);
    assert.deepEqual(a.sum(1, true).shape, [2, 1]);
    assert.deepEqual(a.mean(1).toNumbers(), [3, 4]);
    const { values, indices } = a.max(1);
    assert.deepEqual(values.toNumbers(), [5, 6]);
    assert.deepEqual(indices.toNumbers(), [1, 2]);
    assert.deepEqual(a.amax(0).toNumbers(), [4, 5, 6]);
    assert.deepEqual(a.argmax(1).toNumbers(), [1, 2]);
    assert.equal(a.argmax().item(), 5);
    assertClose(
      a.logsumexp(1),
      [Math.log(Math.E + Math.E ** 5 + Math.E ** 3), Math.log(Math.E ** 4 + Math.E ** 2 + Math.E ** 6)],
      { atol: 1e-12 },
    );
    assertClose(a.norm(2, 1), [Math.sqrt(35), Math.sqrt(56)], { atol: 1e-12 });
    assertClose(a.var(1), [4, 4], { atol: 1e-12 });
    assertClose(a.var(1, false), [8 / 3, 8 / 3], { atol: 1e-12 });
    assert.deepEqual(a.cumsum(1).toList(), [
      [1, 6, 9],
      [4, 6, 12],
    ]);
  }));

test('matmul, bmm, linear', () =>
  T.tidy(() => {
    const a = T.tensor([
      [1, 2],
      [3, 4],
    ]);
    const b = T.tensor([
      [5, 6],
      [7, 8],
    ]);
    assert.deepEqual(a.matmul(b).toList(), [
      [19, 22],
      [43, 50],
    ]);
    assert.deepEqual(a.unsqueeze(0).bmm(b.unsqueeze(0)).squeeze(0).toList(), [
      [19, 22],
      [43, 50],
    ]);
    // linear: x Wᵀ + b
    assert.deepEqual(T.linear(a, b, T.tensor([1, 1])).toList(), [
      [18, 24],
      [40, 54],
    ]);
    assert.deepEqual(T.linear(a, b).toList(), [
      [17, 23],
      [39, 53],
    ]);
  }));

test('softmax, log_softmax, cross_entropy with ignore_index', () =>
  T.tidy(() => {
    const z = T.tensor(
      [
        [1, 2, 3],
        [1, 1, 1],
      ],
      { dtype: 'float64' },
    );
    const e = [Math.E, Math.E ** 2, Math.E ** 3];
    const s = e[0]! + e[1]! + e[2]!;
    assertClose(z.softmax(-1), [e[0]! / s, e[1]! / s, e[2]! / s, 1 / 3, 1 / 3, 1 / 3], { atol: 1e-12 });
    assertClose(z.logSoftmax(-1).select(0, 0), [1 - Math.log(s), 2 - Math.log(s), 3 - Math.log(s)], { atol: 1e-12 });
    const target = T.tensor([2, -100], { dtype: 'int64' });
    // Only row 0 scores: -log softmax(z0)[2].
    assertClose(T.crossEntropy(z, target), [Math.log(s) - 3], { atol: 1e-12 });
    assertClose(
      T.crossEntropy(z, T.tensor([0, 1], { dtype: 'int64' }), { reduction: 'none' }),
      [Math.log(s) - 1, Math.log(3)],
      { atol: 1e-12 },
    );
    assertClose(
      T.crossEntropy(z, T.tensor([0, 1], { dtype: 'int64' }), { reduction: 'sum' }),
      [Math.log(s) - 1 + Math.log(3)],
      { atol: 1e-12 },
    );
  }));

test('dropout: identity in eval, zeroes and rescales in training', () =>
  T.tidy(() => {
    const x = T.ones([10000]);
    assert.equal(x.dropout(0.5, false).sum().item(), 10000);
    const y = x.dropout(0.25, true);
    const kept = y.ne(0).sum().item();
    assert.ok(kept > 7200 && kept < 7800, `kept ${kept}`);
    assertClose([y.amax().item()], [1 / 0.75], { atol: 1e-6 });
  }));

test('embedding, topk, sort, argsort, one_hot, bincount, multinomial', () =>
  T.tidy(() => {
    const w = T.tensor([
      [0, 0],
      [1, 1],
      [2, 2],
    ]);
    assert.deepEqual(T.embedding(w, T.tensor([[2, 0]], { dtype: 'int64' })).toList(), [
      [
        [2, 2],
        [0, 0],
      ],
    ]);
    const t = T.tensor([
      [0.1, 0.7, 0.2],
      [0.5, 0.3, 0.2],
    ]);
    const { values, indices } = t.topk(2);
    assertClose(values, [0.7, 0.2, 0.5, 0.3], { atol: 1e-7 });
    assert.deepEqual(indices.toList(), [
      [1, 2],
      [0, 1],
    ]);
    assert.deepEqual(t.sort(-1, true).indices.toList(), [
      [1, 2, 0],
      [0, 1, 2],
    ]);
    assert.deepEqual(T.tensor([3, 1, 2]).argsort().toNumbers(), [1, 2, 0]);
    assert.deepEqual(T.tensor([2, 0], { dtype: 'int64' }).oneHot(3).toList(), [
      [0, 0, 1],
      [1, 0, 0],
    ]);
    assert.deepEqual(T.bincount(T.tensor([0, 2, 2], { dtype: 'int64' }), 4).toNumbers(), [1, 0, 2, 0]);
    T.manualSeed(1);
    const draws = T.multinomial(T.tensor([[0, 1, 0]]), 1);
    assert.deepEqual(draws.toList(), [[1]]);
  }));

test('scaled dot-product attention: causal and masked equal the plain formula', () =>
  T.tidy(() => {
    T.manualSeed(3);
    const q = T.randn([1, 2, 4, 8], { dtype: 'float64' });
    const k = T.randn([1, 2, 4, 8], { dtype: 'float64' });
    const v = T.randn([1, 2, 4, 8], { dtype: 'float64' });
    const scores = q.matmul(k.mT).div(Math.sqrt(8));
    const causal = T.ones([4, 4], { dtype: 'bool' }).tril();
    const ref = scores.maskedFill(causal.logicalNot(), -Infinity).softmax(-1).matmul(v);
    assertClose(T.scaledDotProductAttention(q, k, v, { causal: true }), ref, { atol: 1e-12 });
    assertClose(T.scaledDotProductAttention(q, k, v, { mask: causal }), ref, { atol: 1e-12 });
    const pad = T.tensor([[false, true, true, true]])
      .reshape(1, 1, 1, 4)
      .logicalAnd(causal)
      .logicalOr(T.eye(4, { dtype: 'bool' }));
    const ref2 = scores.maskedFill(pad.logicalNot(), -Infinity).softmax(-1).matmul(v);
    assertClose(T.scaledDotProductAttention(q, k, v, { mask: pad }), ref2, { atol: 1e-12 });
  }));

test('float16 and bfloat16 arithmetic and conversion', () =>
  T.tidy(() => {
    const h = T.tensor([1.5, -2.25], { dtype: 'float16' });
    assert.deepEqual(h.mul(2).toNumbers(), [3, -4.5]);
    const b = T.tensor([1.5, -2.25], { dtype: 'bfloat16' });
    assert.deepEqual(b.to('float32').toNumbers(), [1.5, -2.25]);
    assert.equal(b.float().dtype, 'float32');
  }));

test('cuda reports availability; threads can be set', () => {
  assert.equal(typeof T.cuda.isAvailable(), 'boolean');
  if (!T.cuda.isAvailable()) assert.equal(T.cuda.deviceCount(), 0);
  const n = T.getNumThreads();
  T.setNumThreads(1);
  assert.equal(T.getNumThreads(), 1);
  T.setNumThreads(n);
});
