// Optimizer updates against hand-computed ones, and exact state save/restore.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { assertClose } from '../helpers/assert.js';
import * as T from '../../src/tensor/index.js';
import { AdamW, SGD, clipGradNorm } from '../../src/optim/index.js';
import { UserError } from '../../src/util/errors.js';

// A parameter whose gradient is g: loss = sum(p * g).
function setGrad(p: T.Tensor, g: number[]): void {
  T.tidy(() =>
    p
      .mul(T.tensor(g, { dtype: 'float64' }))
      .sum()
      .backward(),
  );
}

test('AdamW: two steps equal the formula (decoupled decay, bias correction)', () =>
  T.tidy(() => {
    const p = T.tensor([1, -2], { dtype: 'float64' }).requiresGrad_();
    const opt = new AdamW([p], { lr: 0.1, betas: [0.9, 0.99], eps: 1e-8, weightDecay: 0.1 });
    const grads = [
      [0.5, -1],
      [0.2, 0.3],
    ];
    let ref = [1, -2];
    const m = [0, 0];
    const v = [0, 0];
    grads.forEach((g, s) => {
      setGrad(p, g);
      opt.step();
      opt.zeroGrad();
      const step = s + 1;
      ref = ref.map((x, i) => {
        x *= 1 - 0.1 * 0.1;
        m[i] = 0.9 * m[i]! + 0.1 * g[i]!;
        v[i] = 0.99 * v[i]! + 0.01 * g[i]! * g[i]!;
        const mhat = m[i]! / (1 - 0.9 ** step);
        const denom = Math.sqrt(v[i]!) / Math.sqrt(1 - 0.99 ** step) + 1e-8;
        return x - (0.1 * mhat) / denom;
      });
    });
    assertClose(p, ref, { atol: 1e-12 });
    opt.dispose();
  }));

test('SGD: momentum, dampening, weight decay, nesterov equal the formula', () =>
  T.tidy(() => {
    for (const cfg of [
      { momentum: 0, dampening: 0, weightDecay: 0, nesterov: false },
      { momentum: 0.9, dampening: 0, weightDecay: 0.01, nesterov: false },
      { momentum: 0.9, dampening: 0.5, weightDecay: 0, nesterov: false },
      { momentum: 0.8, dampening: 0, weightDecay: 0.1, nesterov: true },
    ]) {
      const p = T.tensor([1, -2], { dtype: 'float64' }).requiresGrad_();
      const opt = new SGD([p], { lr: 0.1, ...cfg });
      let ref = [1, -2];
      let buf: number[] | null = null;
      for (const g of [
        [0.5, -1],
        [0.2, 0.3],
        [-0.4, 0.1],
      ]) {
        setGrad(p, g);
        opt.step();
        opt.zeroGrad();
        const d = ref.map((x, i) => g[i]! + cfg.weightDecay * x);
        let upd = d;
        if (cfg.momentum !== 0) {
          buf = buf === null ? d.slice() : buf.map((b, i) => cfg.momentum * b + (1 - cfg.dampening) * d[i]!);
          upd = cfg.nesterov ? d.map((x, i) => x + cfg.momentum * buf![i]!) : buf;
        }
        ref = ref.map((x, i) => x - 0.1 * upd[i]!);
      }
      assertClose(p, ref, { atol: 1e-12, what: JSON.stringify(cfg) });
      opt.dispose();
    }
  }));

test('optimizer state restores bit-exactly: interrupted run equals uninterrupted run', () =>
  T.tidy(() => {
    for (const make of [
      (ps: T.Tensor[]) => new AdamW(ps, { lr: 0.01, weightDecay: 0.05 }),
      (ps: T.Tensor[]) => new SGD(ps, { lr: 0.05, momentum: 0.9, weightDecay: 0.01 }),
    ]) {
      T.manualSeed(5);
      const init = T.randn([3, 4]).keep();
      const grads = Array.from({ length: 6 }, () => T.randn([3, 4]).keep());
      const run = (p: T.Tensor, opt: ReturnType<typeof make>, from: number, to: number) => {
        for (let s = from; s < to; s++) {
          T.tidy(() => p.mul(grads[s]!).sum().backward());
          opt.step();
          opt.zeroGrad();
        }
      };
      const a = init.clone().requiresGrad_();
      const optA = make([a]);
      run(a, optA, 0, 6);
      // Interrupted: 3 steps, save params + state (as copies), fresh objects, restore, 3 more.
      const b = init.clone().requiresGrad_();
      const optB = make([b]);
      run(b, optB, 0, 3);
      const saved = T.noGrad(() => ({ p: b.clone(), state: optB.stateDict() }));
      const savedTensors = Object.fromEntries(Object.entries(saved.state.tensors).map(([k, t]) => [k, t.clone()]));
      optB.dispose();
      const c = saved.p.clone().requiresGrad_();
      const optC = make([c]);
      optC.loadStateDict({ ...saved.state, tensors: savedTensors });
      run(c, optC, 3, 6);
      assert.deepEqual(
        Array.from(c.toFloat32Array()),
        Array.from(a.toFloat32Array()),
        `${optA.kind}: resumed run differs`,
      );
      assert.equal(optC.stepCount, 6);
      optA.dispose();
      optC.dispose();
      init.dispose();
      grads.forEach((g) => g.dispose());
    }
  }));

test('clipGradNorm scales to the max norm and returns the norm before clipping', () =>
  T.tidy(() => {
    const p = T.tensor([0, 0], { dtype: 'float64' }).requiresGrad_();
    const q = T.tensor([0], { dtype: 'float64' }).requiresGrad_();
    setGrad(p, [3, 0]);
    setGrad(q, [4]);
    const n = clipGradNorm([p, q], 1);
    assertClose([n], [5], { atol: 1e-12 });
    assertClose(p.grad!, [3 / (5 + 1e-6), 0], { atol: 1e-12 });
    assertClose(q.grad!, [4 / (5 + 1e-6)], { atol: 1e-12 });
    // Below the limit nothing changes.
    assertClose([clipGradNorm([p, q], 10)], [5 / (5 + 1e-6)], { atol: 1e-12 });
    assertClose(q.grad!, [4 / (5 + 1e-6)], { atol: 1e-12 });
  }));

test('a saved optimizer state that does not fit is refused with a UserError naming where and what', () =>
  T.tidy(() => {
    const p = T.zeros([3, 4]).requiresGrad_();
    const opt = new AdamW([p], { lr: 0.01 });
    const state = opt.stateDict();
    const where = 'run/checkpoint-2/a.safetensors';
    const refused = (s: typeof state, pattern: RegExp) =>
      assert.throws(
        () => opt.loadStateDict(s, where),
        (e: Error) => e instanceof UserError && pattern.test(e.message) && e.message.startsWith(where),
      );
    refused({ ...state, kind: 'sgd' }, /is for sgd, not adamw/);
    refused({ ...state, tensors: { 'exp_avg.0': state.tensors['exp_avg.0']! } }, /'exp_avg_sq\.0' is missing/);
    refused(
      { ...state, tensors: { ...state.tensors, 'exp_avg.0': T.zeros([4, 3]) } },
      /'exp_avg\.0' has shape \[4, 3\]/,
    );
    opt.dispose();
  }));
