// Attention of one query per row and head outside autograd (a decode step) takes native/kernels/decode_attention.cc:
// equal to the softmax composition (1e-5 of the largest magnitude) with grouped-query heads, a head size
// with a vector tail, masked keys and keys that are a view of a longer cache, zeros where every key is
// masked; each row the same floats as alone; with gradients or several queries, ATen's kernel as before.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { assertClose } from '../helpers/assert.js';
import * as T from '../../src/tensor/index.js';

/** softmax(q kᵀ / √D, masked) v with grouped-query heads, composed. q [B, H, T, D], k and v [B, Hkv, S, D]. */
function reference(q: T.Tensor, k: T.Tensor, v: T.Tensor, mask: T.Tensor | null): T.Tensor {
  const [B, H, , D] = q.shape as [number, number, number, number];
  const [Hkv, S] = [k.size(1), k.size(2)];
  const widen = (t: T.Tensor) =>
    t
      .unsqueeze(2)
      .expand(B, Hkv, H / Hkv, S, D)
      .reshape(B, H, S, D); // [B, H, S, D]
  let scores = q.matmul(widen(k).transpose(-1, -2)).mul(1 / Math.sqrt(D)); // [B, H, T, S]
  if (mask) scores = scores.maskedFill(mask.logicalNot(), -Infinity);
  return scores.softmax(-1).matmul(widen(v)); // [B, H, T, D]
}

test('one query per head: the composition, grouped heads, masks, cache views; each row as alone', () =>
  T.noGrad(() =>
    T.tidy(() => {
      T.manualSeed(4);
      const [B, H, Hkv, S, D] = [3, 4, 2, 9, 20];
      const q = T.randn([B, H, 1, D]);
      const cacheK = T.randn([B, Hkv, S + 5, D]); // a longer cache: the keys are a view
      const cacheV = T.randn([B, Hkv, S + 5, D]);
      const [k, v] = [cacheK.narrow(2, 0, S), cacheV.narrow(2, 0, S)]; // [B, Hkv, S, D]
      // Row 0 sees every key, row 1 the last 4, row 2 all but the first (left padding).
      const mask = T.tensor(
        [0, 1, 2].map((b) => Array.from({ length: S }, (_, s) => (b === 0 || (b === 1 ? s >= S - 4 : s > 0) ? 1 : 0))),
        { dtype: 'bool' },
      ).view(B, 1, 1, S); // [B, 1, 1, S]
      for (const m of [null, mask]) {
        const got = T.scaledDotProductAttention(q, k, v, { mask: m, causal: false }); // [B, H, 1, D]
        const want = reference(q, k, v, m);
        assertClose(got, want, { atol: 1e-5 * want.abs().amax().item(), what: m ? 'masked' : 'all keys' });
        for (let b = 0; b < B; b++) {
          const one = (t: T.Tensor) => t.narrow(0, b, 1);
          const alone = T.scaledDotProductAttention(one(q), one(k), one(v), { mask: m && one(m), causal: false });
          assert.deepEqual(one(got).toFloat32Array(), alone.toFloat32Array(), `row ${b}: the same floats as alone`);
        }
      }
      // No key to attend: zeros, as ATen's fused kernel gives.
      const none = T.zeros([1, 1, 1, S], { dtype: 'bool' });
      const empty = T.scaledDotProductAttention(q.narrow(0, 0, 1), k.narrow(0, 0, 1), v.narrow(0, 0, 1), {
        mask: none,
      });
      assert.deepEqual(empty.toFloat32Array(), new Float32Array(H * D), 'all keys masked: zeros');
    }),
  ));

test("with gradients, or several queries, attention is ATen's (the gradient flows)", () =>
  T.tidy(() => {
    T.manualSeed(5);
    const q = T.randn([2, 2, 1, 16]).requiresGrad_(true);
    const k = T.randn([2, 2, 5, 16]);
    const v = T.randn([2, 2, 5, 16]);
    const y = T.scaledDotProductAttention(q, k, v, { mask: null, causal: false });
    assertClose(y.detach(), reference(q.detach(), k, v, null), { atol: 1e-5 });
    y.sum().backward();
    assert.ok(q.grad && q.grad.abs().sum().item() > 0, 'a gradient reached q');
    const q3 = T.randn([2, 2, 3, 16]); // three queries per head
    const got = T.noGrad(() => T.scaledDotProductAttention(q3, k, v, { mask: null, causal: false }));
    assertClose(got, reference(q3, k, v, null), { atol: 1e-5 });
  }));
