// linear() through oneDNN (native/kernels/linear.cc) where libtorch has the operator: the product, the input
// gradient for frozen weights, and all three gradients for trained ones equal ATen's matmul composition
// (float32; 1e-4 relative to the largest magnitude: the two sum in different orders); bfloat16 and the
// MIXLORA_GEMM=aten switch take ATen's own linear. Products of 1-16 rows outside autograd (decode steps)
// take native/kernels/small_gemm.cc's kernel: equal to the composition, and each row the same floats whatever
// the rows beside it (a sequence served among others decodes as it does alone).
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
  const small = native.blasInfo().smallGemm;
  assert.ok(['avx512', 'avx2', 'off'].includes(small), small);
  for (const value of ['aten', 'onednn']) {
    const got = execFileSync(
      process.execPath,
      [
        '-e',
        `import('${new URL('../../src/tensor/native.js', import.meta.url).href}').then((m) => console.log(m.native.blasInfo().smallGemm))`,
      ],
      { env: { ...process.env, MIXLORA_GEMM: value }, encoding: 'utf8' },
    ).trim();
    assert.equal(got, 'off', `MIXLORA_GEMM=${value} turns the small-row kernel off`);
  }
});

// Weights of widths with and without a vector tail, rows 1-17 (17: past the kernel, the library again).
for (const [out, inF] of [
  [37, 64],
  [300, 77],
  [8, 1376],
] as const) {
  test(`linear of 1-17 rows outside autograd equals the composition, and each row its product alone [${out}, ${inF}]`, () =>
    T.noGrad(() =>
      T.tidy(() => {
        T.manualSeed(3);
        const w = T.randn([out, inF]); // [out, in]
        const b = T.randn([out]); // [out]
        for (let rows = 1; rows <= 17; rows++) {
          const x = T.randn([rows, inF]); // [rows, in]
          for (const bias of [b, null]) {
            const y = T.linear(x, w, bias); // [rows, out]
            const want = reference(x, w, bias);
            assertClose(y, want, { atol: 1e-5 * want.abs().amax().item(), what: `${rows} rows` });
            // Row invariance is the kernel's (GEMM libraries pick kernels by row count); off, nothing to check.
            if (rows > 16 || native.blasInfo().smallGemm === 'off') continue;
            for (let r = 0; r < rows; r++) {
              const alone = T.linear(x.narrow(0, r, 1), w, bias); // [1, out]
              assert.deepEqual(
                y.narrow(0, r, 1).toFloat32Array(),
                alone.toFloat32Array(),
                `row ${r} of ${rows}: the same floats as alone`,
              );
            }
          }
        }
        // Rows in a [B, T, in] input, and a weight that is a view (not contiguous: the library's path).
        const x3 = T.randn([2, 3, inF]);
        assertClose(T.linear(x3, w, b), reference(x3, w, b), { atol: 1e-5 * 100 });
        const wt = T.randn([inF, out]).transpose(0, 1); // [out, in], strided
        assertClose(T.linear(x3, wt), reference(x3, wt, null), { atol: 1e-5 * 100 });
      }),
    ));
}

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

// float32 activations against a frozen bfloat16 weight (a bfloat16 model computing in float32,
// src/tensor/compute-mode.ts): the weight is widened exactly, so every path gives the floats it gives for the
// float32 copy of the weight: the small-row kernel reading bfloat16 (1-16 rows outside autograd), oneDNN or
// ATen for more rows, and the input gradient; a frozen bias may be bfloat16 too.
for (const [out, inF] of [
  [37, 64],
  [300, 77],
  [8, 1376],
] as const) {
  test(`float32 x against a bfloat16 weight: the floats of its float32 copy, every path [${out}, ${inF}]`, () =>
    T.tidy(() => {
      T.manualSeed(4);
      const w = T.randn([out, inF]).to('bfloat16'); // [out, in]
      const b = T.randn([out]).to('bfloat16'); // [out]
      const w32 = w.to('float32');
      const b32 = b.to('float32');
      T.noGrad(() => {
        for (const rows of [1, 3, 8, 16, 17, 40]) {
          const x = T.randn([rows, inF]); // [rows, in]
          for (const [bias, bias32] of [
            [b, b32],
            [b32, b32],
            [null, null],
          ] as const) {
            const y = T.linear(x, w, bias); // [rows, out]
            assert.equal(y.dtype, 'float32');
            assert.deepEqual(
              y.toFloat32Array(),
              T.linear(x, w32, bias32).toFloat32Array(),
              `${rows} rows, bias ${bias?.dtype ?? 'none'}`,
            );
          }
        }
      });
      // With autograd: the product and the input gradient; the frozen weight gets none.
      const x = T.randn([3, 5, inF]).requiresGrad_(true); // [B, T, in]
      const up = T.randn([3, 5, out]);
      const run = (weight: T.Tensor, bias: T.Tensor) => {
        x.grad?.zero_();
        const y = T.linear(x, weight, bias); // [B, T, out]
        y.mul(up).sum().backward();
        return { y: y.detach().toFloat32Array(), gx: x.grad!.toFloat32Array() };
      };
      const got = run(w, b);
      const want = run(w32, b32);
      assert.deepEqual(got.y, want.y, 'product');
      assert.deepEqual(got.gx, want.gx, 'input gradient');
      assert.equal(w.grad, null, 'a frozen weight gets no gradient');
    }));
}

test('float32 x against a bfloat16 weight that trains: gradients through the widening', () =>
  T.tidy(() => {
    T.manualSeed(5);
    const x = T.randn([6, 32]).requiresGrad_(true); // [N, in]
    const w = T.randn([16, 32]).to('bfloat16').requiresGrad_(true); // [out, in]
    const up = T.randn([6, 16]);
    T.linear(x, w).mul(up).sum().backward();
    assert.equal(w.grad!.dtype, 'bfloat16');
    const want = up.transpose(0, 1).matmul(x.detach()); // [out, in] dyᵀ x
    assertClose(w.grad!.to('float32'), want, { atol: 0.02 * want.abs().amax().item(), what: 'weight gradient' });
    assertClose(x.grad!, up.matmul(w.detach().to('float32')), { atol: 1e-4 * 32, what: 'input gradient' });
  }));
