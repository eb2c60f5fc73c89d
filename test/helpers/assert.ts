// Numeric assertions with stated tolerances: |a - e| <= atol + rtol·|e| for every element.
import assert from 'node:assert/strict';
import type { Tensor } from '../../src/tensor/index.js';

type Numbers = ArrayLike<number> | Tensor;

function toArray(x: Numbers): number[] {
  if (typeof (x as Tensor).toNumbers === 'function') return (x as Tensor).toNumbers();
  return Array.from(x as ArrayLike<number>);
}

export function maxAbsDiff(a: Numbers, b: Numbers): number {
  const x = toArray(a);
  const y = toArray(b);
  assert.equal(x.length, y.length, `length ${x.length} != ${y.length}`);
  let m = 0;
  for (let i = 0; i < x.length; i++) {
    const d = Math.abs(x[i]! - y[i]!);
    if (Number.isNaN(d)) return Number.POSITIVE_INFINITY;
    if (d > m) m = d;
  }
  return m;
}

export function assertClose(
  actual: Numbers,
  expected: Numbers,
  opts: { atol?: number; rtol?: number; what?: string } = {},
): void {
  const atol = opts.atol ?? 1e-6;
  const rtol = opts.rtol ?? 0;
  const a = toArray(actual);
  const e = toArray(expected);
  assert.equal(a.length, e.length, `${opts.what ?? 'values'}: length ${a.length} != ${e.length}`);
  let worst = -1;
  let worstExcess = 0;
  for (let i = 0; i < a.length; i++) {
    const excess = Math.abs(a[i]! - e[i]!) - (atol + rtol * Math.abs(e[i]!));
    if (!(excess <= 0) && (worst < 0 || !(excess <= worstExcess))) {
      worst = i;
      worstExcess = excess;
    }
  }
  if (worst >= 0) {
    assert.fail(
      `${opts.what ?? 'values'} differ at [${worst}]: got ${a[worst]}, expected ${e[worst]} ` +
        `(atol ${atol}, rtol ${rtol}; max abs diff ${maxAbsDiff(a, e)})`,
    );
  }
}
