// Autograd against finite differences (float64) for every differentiable op the models use.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { gradcheck } from '../helpers/gradcheck.js';
import * as T from '../../src/tensor/index.js';

const f64 = { dtype: 'float64' as const };
T.manualSeed(11);
const rnd = (...shape: number[]) => T.randn(shape, f64).keep();
// A fixed random projection turns a tensor output into a scalar with a generic gradient.
const proj = (y: T.Tensor) =>
  T.tidy(() => {
    T.manualSeed(y.numel);
    return y.mul(T.randn([...y.shape], f64)).sum();
  });

test('elementwise math: add/sub/mul/div (broadcast), pow, exp, log, sqrt, rsqrt, tanh, sigmoid, silu, gelu, sin, cos', () => {
  const a = rnd(3, 4);
  const b = rnd(4);
  gradcheck('add', ([x, y]) => proj(x!.add(y!, 0.5)), [a, b]);
  gradcheck('sub', ([x, y]) => proj(x!.sub(y!)), [a, b]);
  gradcheck('mul', ([x, y]) => proj(x!.mul(y!)), [a, b]);
  gradcheck('div', ([x, y]) => proj(x!.div(y!.abs().add(1))), [a, b]);
  gradcheck('pow', ([x]) => proj(x!.pow(3)), [a]);
  gradcheck('exp', ([x]) => proj(x!.exp()), [a]);
  gradcheck('log', ([x]) => proj(x!.abs().add(0.5).log()), [a]);
  gradcheck('sqrt', ([x]) => proj(x!.abs().add(0.5).sqrt()), [a]);
  gradcheck('rsqrt', ([x]) => proj(x!.abs().add(0.5).rsqrt()), [a]);
  gradcheck('tanh', ([x]) => proj(x!.tanh()), [a]);
  gradcheck('sigmoid', ([x]) => proj(x!.sigmoid()), [a]);
  gradcheck('silu', ([x]) => proj(x!.silu()), [a]);
  gradcheck('gelu', ([x]) => proj(x!.gelu()), [a]);
  gradcheck('gelu tanh', ([x]) => proj(x!.gelu('tanh')), [a]);
  gradcheck('sin·cos', ([x]) => proj(x!.sin().mul(x!.cos())), [a]);
  gradcheck('square', ([x]) => proj(x!.square()), [a]);
});

test('fused swiglu: finite differences, equal to silu·mul, refuses mismatched shapes', () => {
  const g = rnd(3, 4);
  const u = rnd(3, 4);
  gradcheck('swiglu', ([x, y]) => proj(T.swiglu(x!, y!)), [g, u]);
  gradcheck('swiglu (gate only)', ([x]) => proj(T.swiglu(x!, u)), [g]);
  T.tidy(() => {
    const composed = g.silu().mul(u);
    assert.equal(T.swiglu(g, u).sub(composed).abs().amax().item(), 0);
  });
  assert.throws(() => T.swiglu(g, rnd(4)), /swiglu: gate and up must have the same shape/);
});

test('reductions: sum, mean, amax, logsumexp, norm', () => {
  const a = rnd(3, 5);
  gradcheck('sum dim', ([x]) => proj(x!.sum(1)), [a]);
  gradcheck('mean keepdim', ([x]) => proj(x!.mean(-1, true)), [a]);
  gradcheck('amax', ([x]) => proj(x!.amax(1)), [a]);
  gradcheck('logsumexp', ([x]) => proj(x!.logsumexp(1)), [a]);
  gradcheck('norm', ([x]) => proj(x!.norm(2, 1)), [a]);
});

test('matmul, bmm, linear (with bias)', () => {
  gradcheck('matmul', ([x, y]) => proj(x!.matmul(y!)), [rnd(2, 3, 4), rnd(4, 5)]);
  gradcheck('bmm', ([x, y]) => proj(x!.bmm(y!)), [rnd(2, 3, 4), rnd(2, 4, 2)]);
  gradcheck('linear', ([x, w, b]) => proj(T.linear(x!, w!, b!)), [rnd(3, 4), rnd(5, 4), rnd(5)]);
});

test('views and joins: reshape, permute, transpose, narrow, select, expand, cat, stack, split', () => {
  const a = rnd(2, 3, 4);
  gradcheck('reshape+permute', ([x]) => proj(x!.permute(2, 0, 1).reshape(4, 6)), [a]);
  gradcheck('transpose+narrow', ([x]) => proj(x!.transpose(1, 2).narrow(1, 1, 2)), [a]);
  gradcheck('select+unsqueeze+expand', ([x]) => proj(x!.select(0, 1).unsqueeze(0).expand(3, 3, 4)), [a]);
  gradcheck('cat', ([x, y]) => proj(T.cat([x!, y!], 1)), [a, rnd(2, 2, 4)]);
  gradcheck('stack', ([x, y]) => proj(T.stack([x!, y!], 0)), [a, rnd(2, 3, 4)]);
  gradcheck(
    'split',
    ([x]) => {
      const [p, q] = x!.split([1, 2], 1);
      return proj(p!.mul(2)).add(proj(q!));
    },
    [a],
  );
});

test('indexing: index_select, gather, index_add, scatter_add, masked_fill, where, embedding', () => {
  const a = rnd(4, 3);
  const idx = T.tensor([3, 0, 3], { dtype: 'int64' }).keep();
  gradcheck('index_select', ([x]) => proj(x!.indexSelect(0, idx)), [a]);
  gradcheck('gather', ([x]) => proj(x!.gather(1, T.tensor([[2], [0], [1], [1]], { dtype: 'int64' }))), [a]);
  gradcheck('index_add', ([x, s]) => proj(x!.indexAdd(0, idx, s!)), [a, rnd(3, 3)]);
  gradcheck(
    'scatter_add',
    ([x, s]) =>
      proj(
        x!.scatterAdd(
          0,
          T.tensor(
            [
              [1, 0, 3],
              [1, 2, 2],
            ],
            { dtype: 'int64' },
          ),
          s!,
        ),
      ),
    [a, rnd(2, 3)],
  );
  const mask = T.tensor([[true, false, true]]).keep();
  gradcheck('masked_fill', ([x]) => proj(x!.maskedFill(mask, 0)), [a]);
  gradcheck('where', ([x, y]) => proj(T.where(mask, x!, y!)), [a, rnd(4, 3)]);
  gradcheck('embedding', ([w]) => proj(T.embedding(w!, T.tensor([[1, 3, 1]], { dtype: 'int64' }))), [a]);
});

test('softmax, log_softmax, cross_entropy (ignore_index), topk values', () => {
  const a = rnd(4, 5);
  gradcheck('softmax', ([x]) => proj(x!.softmax(-1)), [a]);
  gradcheck('log_softmax', ([x]) => proj(x!.logSoftmax(-1)), [a]);
  const target = T.tensor([1, -100, 4, 0], { dtype: 'int64' }).keep();
  gradcheck('cross_entropy mean', ([x]) => T.crossEntropy(x!, target), [a]);
  gradcheck('cross_entropy sum', ([x]) => T.crossEntropy(x!, target, { reduction: 'sum' }), [a]);
  const valid = T.tensor([1, 2, 4, 0], { dtype: 'int64' }).keep();
  gradcheck('sum_cross_entropy (fused)', ([x]) => T.sumCrossEntropy(x!, valid), [a]);
  gradcheck('topk values', ([x]) => proj(x!.topk(2).values), [a]);
});

test('attention (causal and masked), RMSNorm and rotary composites', () => {
  const q = rnd(1, 2, 3, 4);
  const k = rnd(1, 2, 3, 4);
  const v = rnd(1, 2, 3, 4);
  gradcheck('sdpa causal', ([a, b, c]) => proj(T.scaledDotProductAttention(a!, b!, c!, { causal: true })), [q, k, v]);
  const mask = T.tensor([
    [true, false, false],
    [true, true, false],
    [false, true, true],
  ]).keep();
  gradcheck('sdpa mask', ([a, b, c]) => proj(T.scaledDotProductAttention(a!, b!, c!, { mask })), [q, k, v]);
  gradcheck('rmsnorm', ([x, w]) => proj(x!.mul(x!.square().mean(-1, true).add(1e-5).rsqrt()).mul(w!)), [
    rnd(3, 6),
    rnd(6),
  ]);
  const cos = rnd(3, 4);
  const sin = rnd(3, 4);
  gradcheck(
    'rotate_half rope',
    ([x]) => {
      const [x1, x2] = x!.chunk(2, -1);
      return proj(x!.mul(cos).add(T.cat([x2!.neg(), x1!], -1).mul(sin)));
    },
    [q],
  );
});
