// 8-bit AdamW (src/optim/adamw-8bit.ts, native/kernels/optim_8bit.cc) against the independent numpy reference
// (test/reference/adamw_8bit.py): the two quantisation maps exactly; after four steps the parameters within
// 1e-6 (relative 1e-5) and the stored moments' codes equal (a code one step away allowed for at most
// 0.1% of values: float32 distances here, float64 there, may round a near-tie apart), for both executors.
// Then: state bytes, small parameters on float32 moments, exact resume, refusals, and a fit as good as
// float32 AdamW's.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import * as T from '../../src/tensor/index.js';
import { native } from '../../src/tensor/native.js';
import { loadAll, saveSafetensors } from '../../src/io/safetensors.js';
import { AdamW, AdamW8bit, adamw8bitMaps, MIN_8BIT_SIZE } from '../../src/optim/index.js';
import { UserError } from '../../src/util/errors.js';
import { assertClose } from '../helpers/assert.js';
import { ROOT, tempDir } from '../helpers/fixtures.js';
import { venvPython } from '../helpers/python.js';

const HYPER = { lr: 1e-2, betas: [0.9, 0.999] as [number, number], eps: 1e-8, weightDecay: 0.01 };

function referenceCases(): Map<string, T.Tensor> {
  const file = path.join(tempDir(), 'adamw-8bit-cases.safetensors');
  const r = spawnSync(venvPython(), [path.join(ROOT, 'test', 'reference', 'adamw_8bit.py'), file], {
    encoding: 'utf8',
    cwd: path.join(ROOT, 'test', 'reference'),
  });
  assert.equal(r.status, 0, r.stderr);
  return loadAll(file).tensors;
}

const cases = referenceCases();
const caseNames = [...cases.keys()].filter((k) => k.endsWith('.p0')).map((k) => k.slice(0, -3));

/** A gradient g for p: loss = sum(p * g). */
function setGrad(p: T.Tensor, g: T.Tensor): void {
  T.tidy(() => p.mul(g).sum().backward());
}

/** The 8-bit state of the first parameter, by name. */
function quantisedState(opt: AdamW8bit): Record<string, T.Tensor> {
  const s = opt.stateDict().tensors;
  return {
    m_codes: s['exp_avg_codes.0']!,
    m_absmax: s['exp_avg_absmax.0']!,
    v_codes: s['exp_avg_sq_codes.0']!,
    v_absmax: s['exp_avg_sq_absmax.0']!,
  };
}

function assertCodesMatch(ours: T.Tensor, expected: T.Tensor, what: string): void {
  const a = ours.toNumbers();
  const e = expected.toNumbers();
  assert.equal(a.length, e.length, `${what}: length`);
  let off = 0;
  a.forEach((x, i) => {
    if (x === e[i]) return;
    assert.ok(Math.abs(x - e[i]!) === 1, `${what}: value ${i} has code ${x}, the reference ${e[i]}`);
    off++;
  });
  assert.ok(off <= a.length / 1000, `${what}: ${off} of ${a.length} codes one step from the reference's`);
}

test("the quantisation maps equal bitsandbytes' dynamic maps (signed and unsigned) exactly", () =>
  T.tidy(() => {
    const [signed, unsigned] = adamw8bitMaps();
    assert.deepEqual(signed.toNumbers(), cases.get('map.signed')!.toNumbers());
    assert.deepEqual(unsigned.toNumbers(), cases.get('map.unsigned')!.toNumbers());
  }));

test('the CPU loop quantises to the nearest map entry, ties to the lower one: at every midpoint, ±2 ulps, and across all decades', () =>
  T.tidy(() => {
    for (const [signed, map] of adamw8bitMaps().map((m, i) => [i === 0, m.toNumbers()] as const)) {
      const xs: number[] = [];
      const f32 = new Float32Array(1);
      const i32 = new Int32Array(f32.buffer);
      const near = (v: number, ulps: number) => {
        f32[0] = v;
        i32[0]! += ulps;
        return f32[0]!;
      };
      for (let j = 0; j + 1 < map.length; j++) {
        const mid = (map[j]! + map[j + 1]!) / 2;
        for (let u = -2; u <= 2; u++) xs.push(near(mid, u));
        xs.push(map[j]!);
      }
      for (let k = 0; k < 4000; k++) {
        const magnitude = 10 ** (-8 + (8 * k) / 4000);
        xs.push(signed && k % 2 === 1 ? -magnitude : magnitude);
      }
      xs.push(0, 1, signed ? -1 : 0.5);
      const x = T.tensor(xs, { dtype: 'float32' });
      const codes = new T.Tensor(native.adamw8bitNearest(x.id, signed)).toNumbers();
      const values = x.toNumbers();
      values.forEach((v, i) => {
        let best = 0;
        for (let j = 1; j < map.length; j++) if (Math.abs(v - map[j]!) < Math.abs(v - map[best]!)) best = j;
        assert.equal(
          codes[i],
          best,
          `${signed ? 'signed' : 'unsigned'} map: ${v} got code ${codes[i]}, nearest is ${best}`,
        );
      });
    }
  }));

for (const tensorOps of [false, true]) {
  const label = tensorOps ? ' (tensor-op executor)' : '';
  for (const name of caseNames) {
    test(`8-bit AdamW '${name}': four steps equal the reference${label}`, () =>
      T.tidy(() => {
        const p = cases.get(`${name}.p0`)!.clone().requiresGrad_();
        const grads = cases.get(`${name}.grads`)!;
        const opt = new AdamW8bit([p], { ...HYPER, tensorOps });
        for (let s = 0; s < grads.shape[0]!; s++) {
          setGrad(p, grads.select(0, s));
          opt.step();
          opt.zeroGrad();
        }
        assertClose(p, cases.get(`${name}.p`)!, { atol: 1e-6, rtol: 1e-5, what: `${name}: parameters` });
        const state = quantisedState(opt);
        for (const moment of ['m', 'v']) {
          assertCodesMatch(
            state[`${moment}_codes`]!,
            cases.get(`${name}.${moment}_codes`)!,
            `${name}: ${moment} codes`,
          );
          assertClose(state[`${moment}_absmax`]!, cases.get(`${name}.${moment}_absmax`)!, {
            atol: 0,
            rtol: 1e-5,
            what: `${name}: ${moment} absmax`,
          });
        }
        if (name === 'zero_block') {
          // The block whose gradients were all zero: absmax 0.
          assert.equal(state['m_absmax']!.toNumbers()[0], 0);
          assert.equal(state['v_absmax']!.toNumbers()[0], 0);
        }
        opt.dispose();
      }));
  }
}

test('8-bit state takes 2 bytes per value and 8 per block of 256; small parameters keep float32 moments', () =>
  T.tidy(() => {
    const big = T.zeros([10, 1000]).requiresGrad_();
    const small = T.zeros([MIN_8BIT_SIZE - 1]).requiresGrad_();
    const opt = new AdamW8bit([big, small], { lr: 1e-3 });
    assert.equal(opt.stateBytes(), 2 * 10_000 + 2 * 4 * Math.ceil(10_000 / 256) + 2 * 4 * (MIN_8BIT_SIZE - 1));
    // The small parameter steps exactly as AdamW does.
    const twin = T.zeros([MIN_8BIT_SIZE - 1]).requiresGrad_();
    const ref = new AdamW([twin], { lr: 1e-3 });
    T.manualSeed(3);
    for (let s = 0; s < 3; s++) {
      const g = T.randn([MIN_8BIT_SIZE - 1]);
      setGrad(small, g);
      setGrad(twin, g);
      setGrad(big, T.randn([10, 1000]));
      opt.step();
      ref.step();
      opt.zeroGrad();
      ref.zeroGrad();
    }
    assert.deepEqual(Array.from(small.toFloat32Array()), Array.from(twin.toFloat32Array()));
    opt.dispose();
    ref.dispose();
  }));

test('8-bit AdamW resumes bit-exactly from its state saved to a file', () =>
  T.tidy(() => {
    T.manualSeed(5);
    const init = T.randn([8, 700]);
    const grads = Array.from({ length: 6 }, () => T.randn([8, 700]));
    const run = (p: T.Tensor, opt: AdamW8bit, from: number, to: number) => {
      for (let s = from; s < to; s++) {
        setGrad(p, grads[s]!);
        opt.step();
        opt.zeroGrad();
      }
    };
    const a = init.clone().requiresGrad_();
    const optA = new AdamW8bit([a], { lr: 0.01 });
    run(a, optA, 0, 6);
    const b = init.clone().requiresGrad_();
    const optB = new AdamW8bit([b], { lr: 0.01 });
    run(b, optB, 0, 3);
    // Through a safetensors file, as checkpoints keep it (uint8 codes, float32 absmax).
    const file = path.join(tempDir(), 'optim-8bit.safetensors');
    const state = optB.stateDict();
    saveSafetensors(file, new Map(Object.entries(state.tensors)));
    const c = b.detach().clone().requiresGrad_();
    optB.dispose();
    const optC = new AdamW8bit([c], { lr: 0.01 });
    const loaded = loadAll(file).tensors;
    optC.loadStateDict({ ...state, tensors: Object.fromEntries(loaded) });
    run(c, optC, 3, 6);
    assert.deepEqual(Array.from(c.toFloat32Array()), Array.from(a.toFloat32Array()));
    assert.equal(optC.stepCount, 6);
    optA.dispose();
    optC.dispose();
  }));

test('a saved 8-bit state that does not fit is refused with a UserError naming the tensor', () =>
  T.tidy(() => {
    const p = T.zeros([20, 300]).requiresGrad_();
    const opt = new AdamW8bit([p], { lr: 0.01 });
    const state = opt.stateDict();
    const where = 'run/checkpoint-2/a.safetensors';
    const refused = (s: typeof state, pattern: RegExp) =>
      assert.throws(
        () => opt.loadStateDict(s, where),
        (e: Error) => e instanceof UserError && pattern.test(e.message) && e.message.startsWith(where),
      );
    refused({ ...state, kind: 'adamw' }, /is for adamw, not adamw8bit/);
    const { ['exp_avg_sq_absmax.0']: _dropped, ...rest } = state.tensors;
    refused({ ...state, tensors: rest }, /'exp_avg_sq_absmax\.0' is missing/);
    refused(
      { ...state, tensors: { ...state.tensors, 'exp_avg_codes.0': T.zeros([6000]) } },
      /'exp_avg_codes\.0' is float32 \[6000\], expected uint8 \[6000\]/,
    );
    refused({ ...state, hyper: { ...state.hyper, block: 2048 } }, /blocks of 2048, expected 256/);
    opt.dispose();
  }));

test('8-bit AdamW fits a least-squares problem as well as float32 AdamW (final loss within 2%)', () =>
  T.tidy(() => {
    T.manualSeed(11);
    const x = T.randn([256, 64]);
    const target = x.matmul(T.randn([64, 80]));
    const fit = (make: (ps: T.Tensor[]) => AdamW | AdamW8bit) => {
      T.manualSeed(12);
      const w = T.randn([64, 80]).mul(0.01).requiresGrad_();
      const opt = make([w]);
      let loss = 0;
      for (let s = 0; s < 300; s++) {
        loss = T.tidy(() => {
          const l = x.matmul(w).sub(target).pow(2).mean();
          l.backward();
          return l.item();
        });
        opt.step();
        opt.zeroGrad();
      }
      opt.dispose();
      return loss;
    };
    const full = fit((ps) => new AdamW(ps, { lr: 0.05, weightDecay: 0 }));
    const eight = fit((ps) => new AdamW8bit(ps, { lr: 0.05, weightDecay: 0 }));
    assert.ok(full < 1, `float32 AdamW did not fit (loss ${full})`);
    assert.ok(Math.abs(eight - full) <= 0.02 * full + 1e-4, `8-bit loss ${eight} against float32 ${full}`);
  }));
