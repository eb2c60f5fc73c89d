// Where the parity tests run: MIXLORA_TEST_DEVICE (cpu, cuda, cuda:N; default cpu) and MIXLORA_TEST_DTYPE
// (float32, default, or bfloat16). scripts/gpu-check.sh runs them on cuda in both dtypes. With float32 the
// tolerances are the suite's own; TF32 stays off (libtorch's default since PyTorch 1.12, which mixlora never
// changes), so a CUDA float32 product is a true float32 product. bfloat16 keeps 8 bits of mantissa (relative
// rounding 2^-9 ≈ 2e-3 per value, compounded through each layer), and a rounding can flip a router's top-k
// choice, which changes a token's output outright: element-wise bounds do not fit, so bfloat16 is held to
// bounds on the relative error of the whole tensor, ‖ours − reference‖ / ‖reference‖ (assertParity()). A
// bfloat16 model computes as the compute mode decides (TEST_COMPUTE_DTYPE; MIXLORA_BF16_COMPUTE=native or
// float32 runs either mode anywhere).
import assert from 'node:assert/strict';
import { UserError } from '../../src/util/errors.js';
import { computeMode } from '../../src/tensor/compute-mode.js';
import type { Device, DType, Tensor } from '../../src/tensor/index.js';
import { assertClose } from './assert.js';

function readDevice(): Device {
  const s = process.env.MIXLORA_TEST_DEVICE ?? 'cpu';
  if (s === 'cpu' || s === 'cuda' || /^cuda:\d+$/.test(s)) return s as Device;
  throw new UserError(`MIXLORA_TEST_DEVICE=${s}: expected cpu, cuda or cuda:N`);
}

function readDtype(): 'float32' | 'bfloat16' {
  const s = process.env.MIXLORA_TEST_DTYPE ?? 'float32';
  if (s === 'float32' || s === 'bfloat16') return s;
  throw new UserError(`MIXLORA_TEST_DTYPE=${s}: expected float32 or bfloat16`);
}

export const TEST_DEVICE: Device = readDevice();
export const TEST_DTYPE: DType = readDtype();
/** The dtype the models compute in: TEST_DTYPE, but for bfloat16 as a user's model would (src/tensor/compute-mode.ts:
 * float32 over the bfloat16 weights on a CPU without bfloat16 arithmetic; MIXLORA_BF16_COMPUTE=native or float32
 * picks one). */
export const TEST_COMPUTE_DTYPE: DType = computeMode(TEST_DTYPE, TEST_DEVICE).compute;

/** bfloat16 bounds on ‖ours − reference‖ / ‖reference‖ (reference: the float32 PyTorch results). */
export const BF16_REL = {
  logits: 5e-2, // the plain models reach 1.2e-2 on the CPU
  loss: 2e-2, // CE and aux loss (scalars: |ours − reference| / |reference|)
  grads: 5e-2, // all of an adapter's gradients as one vector: the floor of bf16Bound()
} as const;

/**
 * The adapter cases carry the PyTorch reference's own bfloat16 deviation from its float32 results
 * (test/reference/adapters.py, bf16_rel.*; bf16w_rel.* computing in float32 over the weights rounded to bfloat16,
 * as TEST_COMPUTE_DTYPE may): small random models can be ill-conditioned enough that bfloat16
 * base weights move the gradients by 60% in PyTorch itself (the mixlora and dora-rslora cases). mixlora
 * must stay within twice that deviation, and never needs to beat the floor of BF16_REL.
 */
export function bf16Bound(kind: 'logits' | 'grads', referenceOwnDeviation: number | undefined): number {
  return Math.max(BF16_REL[kind], 2 * (referenceOwnDeviation ?? 0));
}

/** ‖a − e‖₂ / ‖e‖₂ (0 when both are 0). */
export function relativeError(a: ArrayLike<number>, e: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < e.length; i++) {
    num += (a[i]! - e[i]!) ** 2;
    den += e[i]! ** 2;
  }
  return num === 0 ? 0 : Math.sqrt(num / Math.max(den, 1e-30));
}

/** A description of the bound a quantity is held to on this placement. */
export function bound(kind: 'logits', float32: string): string {
  return TEST_DTYPE === 'bfloat16' ? `relative error ≤ ${BF16_REL[kind]}` : float32;
}

/** A label for test names: '' on the default cpu/float32. */
export const PLACEMENT =
  TEST_DEVICE === 'cpu' && TEST_DTYPE === 'float32'
    ? ''
    : ` [${TEST_DEVICE}, ${TEST_DTYPE}${TEST_COMPUTE_DTYPE !== TEST_DTYPE ? ` computing in ${TEST_COMPUTE_DTYPE}` : ''}]`;

/** A copy on the CPU in float32, for comparing with reference values. */
export function host(t: Tensor): Tensor {
  return t.to({ dtype: 'float32', device: 'cpu' });
}

function numbers(x: Tensor | number[]): number[] {
  return Array.isArray(x) ? x : host(x).toNumbers();
}

/** float32: every element within `atol` (the suite's bound); bfloat16: the relative error within BF16_REL. */
export function assertParity(
  kind: keyof typeof BF16_REL,
  actual: Tensor | number[],
  expected: Tensor | number[],
  atol: number,
  what: string,
  bf16: number = BF16_REL[kind],
): void {
  if (TEST_DTYPE !== 'bfloat16') return assertClose(numbers(actual), numbers(expected), { atol, what });
  const err = relativeError(numbers(actual), numbers(expected));
  assert.ok(err <= bf16, `${what}: relative error ${err.toExponential(2)} > ${bf16.toPrecision(2)} (bfloat16)`);
}
