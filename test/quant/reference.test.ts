// Quantising and dequantising against the independent numpy reference (test/reference/quant.py): NF4's
// packed codes and absmax values byte for byte, including exact ties between two levels, blocks that
// cross rows, an odd count and a zero block; int8's codes and scales, halves included (round half to
// even); and the dequantised values exactly (both compute level × absmax, q × scale in float32).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import * as T from '../../src/tensor/index.js';
import { loadAll } from '../../src/io/safetensors.js';
import { QuantizedWeight } from '../../src/quant/quantized-weight.js';
import { ROOT, tempDir } from '../helpers/fixtures.js';
import { venvPython } from '../helpers/python.js';
import { PLACEMENT, TEST_DEVICE, host } from '../helpers/device.js';

function referenceCases(): Map<string, T.Tensor> {
  const file = path.join(tempDir(), 'quant-cases.safetensors');
  const r = spawnSync(venvPython(), [path.join(ROOT, 'test', 'reference', 'quant.py'), 'cases', file], {
    encoding: 'utf8',
  });
  assert.equal(r.status, 0, r.stderr);
  return loadAll(file).tensors;
}

const cases = referenceCases();
const names = (format: string) =>
  [...cases.keys()].filter((k) => k.startsWith(`${format}.`) && k.endsWith('.w')).map((k) => k.split('.')[1]!);

/** Element-wise equality, reporting the first difference. */
function assertSame(ours: T.Tensor, expected: T.Tensor, what: string): void {
  assert.deepEqual(ours.shape, expected.shape, `${what}: shape`);
  assert.equal(ours.dtype, expected.dtype, `${what}: dtype`);
  const a = host(ours).toNumbers();
  const e = expected.toNumbers();
  const i = a.findIndex((v, j) => !Object.is(v, e[j]) && !(v === 0 && e[j] === 0));
  assert.equal(i, -1, `${what}: element ${i} is ${a[i]}, the reference has ${e[i]}`);
}

// On the CPU the addon quantises with loops; `portable` runs the tensor-op version every other device runs.
const PATHS = [
  { portable: false, label: '' },
  { portable: true, label: ' (tensor-op version)' },
];

for (const { portable, label } of PATHS) {
  for (const name of names('nf4')) {
    test(`nf4 '${name}': packed codes, absmax and dequantised values equal the reference exactly${label}${PLACEMENT}`, () =>
      T.tidy(() => {
        const w = cases.get(`nf4.${name}.w`)!.to(TEST_DEVICE);
        const q = QuantizedWeight.quantize(w, 'nf4', { portable });
        assertSame(q.data, cases.get(`nf4.${name}.packed`)!, 'packed codes');
        assertSame(q.scales, cases.get(`nf4.${name}.absmax`)!, 'absmax');
        const expected = cases.get(`nf4.${name}.dequantised`)!;
        assertSame(q.dequantize('float32', { portable }), expected, 'dequantised');
        // In a half-precision compute dtype: the float32 value rounded once.
        assertSame(q.dequantize('bfloat16', { portable }), expected.to('bfloat16'), 'dequantised (bfloat16)');
        // Bytes held: half a byte per value (rounded up) and 4 per block of 64.
        assert.equal(q.bytes, Math.ceil(w.numel / 2) + 4 * Math.ceil(w.numel / 64));
        q.dispose();
      }));
  }

  for (const name of names('int8')) {
    test(`int8 '${name}': codes, scales and dequantised values equal the reference exactly${label}${PLACEMENT}`, () =>
      T.tidy(() => {
        const w = cases.get(`int8.${name}.w`)!.to(TEST_DEVICE);
        const q = QuantizedWeight.quantize(w, 'int8', { portable });
        assertSame(q.data, cases.get(`int8.${name}.q`)!, 'codes');
        assertSame(q.scales, cases.get(`int8.${name}.scale`)!, 'scales');
        const expected = cases.get(`int8.${name}.dequantised`)!;
        assertSame(q.dequantize('float32', { portable }), expected, 'dequantised');
        assertSame(q.dequantize('bfloat16', { portable }), expected.to('bfloat16'), 'dequantised (bfloat16)');
        assert.equal(q.bytes, w.numel + 4 * w.size(0));
        q.dispose();
      }));
  }
}

test('nf4 ties: the cases include exact midpoints, and each goes to the lower level', () =>
  T.tidy(() => {
    const w = cases.get('nf4.ties.w')!;
    const levels = [
      -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635, -0.18477343022823334,
      -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
      0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
    ].map(Math.fround);
    const mids = levels.slice(0, -1).map((l, i) => (l + levels[i + 1]!) / 2);
    const row = w.select(0, 0).toNumbers(); // absmax 1: w / absmax = w
    const ties = row.filter((v) => mids.includes(v));
    assert.ok(ties.length >= 5, `only ${ties.length} exact ties in the case`);
    const q = QuantizedWeight.quantize(w, 'nf4');
    const deq = q.dequantize('float32').select(0, 0).toNumbers();
    for (const v of ties) {
      const i = mids.indexOf(v);
      assert.equal(deq[row.indexOf(v)], levels[i], `${v} (between levels ${i} and ${i + 1}) goes to level ${i}`);
    }
    q.dispose();
  }));

test('a quantised linear equals the linear of the dequantised weight, forward and input gradient', () =>
  T.tidy(() => {
    T.manualSeed(3);
    for (const format of ['nf4', 'int8'] as const) {
      const w = T.randn([48, 40], { device: TEST_DEVICE }).mul(0.02);
      const q = QuantizedWeight.quantize(w, format);
      const dense = q.dequantize('float32');
      const x1 = T.randn([2, 3, 40], { device: TEST_DEVICE }).requiresGrad_();
      const x2 = x1.detach().requiresGrad_();
      const g = T.randn([2, 3, 48], { device: TEST_DEVICE });
      const y1 = q.linear(x1);
      const y2 = T.linear(x2, dense);
      y1.mul(g).sum().backward();
      y2.mul(g).sum().backward();
      assertSame(y1, y2, `${format} forward`);
      assertSame(x1.grad!, x2.grad!, `${format} input gradient`);
      q.dispose();
    }
  }));

test('the addon refuses mismatched quantised tensors', () =>
  T.tidy(() => {
    const q = QuantizedWeight.quantize(T.randn([4, 64]), 'nf4');
    assert.throws(() => q.linear(T.randn([2, 63])), /last dimension/);
    const i8 = QuantizedWeight.quantize(T.randn([4, 64]), 'int8');
    assert.throws(() => QuantizedWeight.quantize(T.randn([4, 4, 4]), 'int8'), /\[out, in\]/);
    q.dispose();
    i8.dispose();
  }));
