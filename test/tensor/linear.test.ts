// linear() through oneDNN (native/linear.cc) where libtorch has the operator: the product, the input
// gradient for frozen weights, and all three gradients for trained ones equal ATen's matmul composition
// (float32; 1e-4 relative to the largest magnitude: the two sum in different orders); bfloat16 and the
// MIXLORA_GEMM=aten switch take ATen's own linear.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { test } from 'node:test';
import { assertClose } from '../helpers/assert.js';
import * as T from '../../src/tensor/index.js';
import { native } from '../../src/tensor/native.js';

function reference(x: T.Tensor, w: T.Tensor, b: T.Tensor | null): T.Tensor {
  const y = x.matmul(w.transpose(0, 1)); // [.., out]
  return b ? y.add(b) : y;
}

test('linear: which backend the addon uses is reported', () => {
  const backend = native.blasInfo().linear;
  assert.ok(backend === 'onednn' || backend === 'aten', backend);
  const off = execFileSync(
    process.execPath,
    [
      '-e',
      `import('${new URL('../../src/tensor/native.js', import.meta.url).href}').then((m) => console.log(m.native.blasInfo().linear))`,
    ],
    { env: { ...process.env, MIXLORA_GEMM: 'aten' }, encoding: 'utf8' },
  ).trim();
  assert.equal(off, 'aten', 'MIXLORA_GEMM=aten turns oneDNN off');
});

// [out, in]: narrower out (the weight gradient through oneDNN) and wider (through ATen).
for (const [trained, out, inF] of [
  [false, 48, 64],
  [true, 48, 64],
  [true, 64, 48],
] as const) {
  test(`linear equals the matmul composition, forward and backward, ${trained ? 'trained' : 'frozen'} weight [${out}, ${inF}]`, () =>
    T.tidy(() => {
      T.manualSeed(1);
      const x = T.randn([3, 5, inF]).requiresGrad_(true); // [B, T, in]
      const w = T.randn([out, inF]).requiresGrad_(trained); // [out, in]
      const b = T.randn([out]).requiresGrad_(trained); // [out]
      const up = T.randn([3, 5, out]); // upstream gradient
      const grads = (f: typeof reference) => {
        for (const t of [x, w, b]) t.grad?.zero_();
        const y = f(x, w, b);
        y.mul(up).sum().backward();
        return { y: y.detach(), gx: x.grad!.clone(), gw: w.grad?.clone(), gb: b.grad?.clone() };
      };
      const got = grads((x, w, b) => T.linear(x, w, b));
      const want = grads(reference);
      const tol = (t: T.Tensor) => ({ atol: 1e-4 * t.abs().amax().item() });
      assertClose(got.y, want.y, { ...tol(want.y), what: 'product' });
      assertClose(got.gx, want.gx, { ...tol(want.gx), what: 'input gradient' });
      if (trained) {
        assertClose(got.gw!, want.gw!, { ...tol(want.gw!), what: 'weight gradient' });
        assertClose(got.gb!, want.gb!, { ...tol(want.gb!), what: 'bias gradient' });
      } else {
        assert.equal(w.grad, null, 'a frozen weight gets no gradient');
      }
    }));
}

test('linear in bfloat16 and without a bias', () =>
  T.tidy(() => {
    T.manualSeed(2);
    const x = T.randn([7, 32]);
    const w = T.randn([16, 32]);
    assertClose(T.linear(x, w), reference(x, w, null), { atol: 1e-4 * 32 });
    const xb = x.to('bfloat16');
    const wb = w.to('bfloat16');
    assert.equal(T.linear(xb, wb).dtype, 'bfloat16');
    assertClose(T.linear(xb, wb).to('float32'), reference(xb, wb, null).to('float32'), { atol: 0.1 });
  }));
