// libtorch errors become JavaScript Errors with libtorch's message; the process lives on.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as T from '../../src/tensor/index.js';

test('shape mismatch throws with the shapes named', () =>
  T.tidy(() => {
    assert.throws(() => T.ones([2, 3]).matmul(T.ones([2, 3])), /2x3 and 2x3|cannot be multiplied/);
    assert.throws(() => T.ones([2]).add(T.ones([3])), /size of tensor a \(2\) must match/);
    assert.throws(() => T.ones([6]).view(4), /invalid for input of size 6/);
  }));

test('bad dtype and bad arguments throw', () =>
  T.tidy(() => {
    assert.throws(() => T.zeros([2], { dtype: 'complex64' as never }), /unknown dtype/);
    assert.throws(() => T.crossEntropy(T.ones([2, 3]), T.ones([2])), /expected scalar type Long|Long/);
    assert.throws(() => T.embedding(T.ones([3, 2]), T.tensor([5], { dtype: 'int64' })), /index out of range/);
    assert.throws(() => T.ones([2]).indexSelect(0, T.tensor([7], { dtype: 'int64' })), /out of range|index/);
    assert.throws(() => T.tensor([1, 2, 3], { shape: [2, 2] }), /ragged|bytes/);
  }));

test('use after dispose throws a clear error', () => {
  const t = T.ones([2]);
  t.dispose();
  assert.throws(() => t.add(1), /used after dispose/);
  assert.throws(() => T.ones([2]).add(t), /used after dispose/);
});

test('autograd misuse throws (backward of a non-scalar without gradient, of a tensor without grad_fn)', () =>
  T.tidy(() => {
    const x = T.ones([3]).requiresGrad_();
    assert.throws(() => x.mul(2).backward(), /grad can be implicitly created only for scalar outputs/);
    assert.throws(() => T.ones([1]).sum().backward(), /does not require grad/);
  }));

test('a huge allocation fails with an error, not a crash', () => {
  assert.throws(() => T.empty([2 ** 40, 2 ** 10]), /alloc|memory|overflow|size/i);
  assert.equal(T.ones([1]).item(), 1);
});
