// Cheap whole-tensor checks for loading untrusted weights.
import { noGrad } from './autograd.js';
import { tidy } from './scope.js';
import type { Tensor } from './tensor.js';

/** Whether every value is finite (no NaN, no ±Inf): one reduction, no copy kept. */
export function allFinite(t: Tensor): boolean {
  if (t.numel === 0) return true;
  return Boolean(tidy(() => noGrad(() => t.isfinite().all().item())));
}
