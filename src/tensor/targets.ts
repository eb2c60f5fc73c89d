// The names users write for a compute dtype and a device (command-line flags, training configs),
// checked against what this libtorch offers. `where` names the flag or field in the message.
import { UserError } from '../util/errors.js';
import { ones } from './create.js';
import { isDType, isFloating, type DType } from './dtype.js';
import { cuda } from './runtime.js';
import { tidy } from './scope.js';
import type { Device } from './tensor.js';

export function parseDType(s: string, where: string): DType {
  if (!isDType(s) || !isFloating(s) || s === 'float64')
    throw new UserError(`${where}: '${s}' is not a compute dtype (float32, bfloat16, float16)`);
  return s;
}

export function parseDevice(s: string, where: string): Device {
  if (s === 'cpu') return 'cpu';
  if (s === 'cuda' || /^cuda:\d+$/.test(s)) {
    if (!cuda.isAvailable())
      throw new UserError(
        `${where} ${s}: this libtorch has no usable CUDA (build the addon against a CUDA libtorch; see docs/building.md)`,
      );
    return s as Device;
  }
  throw new UserError(`${where}: '${s}' is not cpu, cuda or cuda:N`);
}

/** Refuses a compute dtype this libtorch cannot multiply matrices in on the device (libtorch 1.13
 * has no float16 matmul on CPU), with a clear message instead of an error deep in the first layer. */
export function checkComputeDType(dtype: DType, device: Device, where: string): void {
  if (dtype === 'float32') return;
  try {
    // (the product is not returned: tidy frees it with the rest)
    tidy(() => {
      ones([2, 2], { dtype, device }).matmul(ones([2, 2], { dtype, device }));
    });
  } catch {
    throw new UserError(
      `${where}: this libtorch cannot compute in ${dtype} on ${device}; use ${dtype === 'float16' ? 'bfloat16 or ' : ''}float32`,
    );
  }
}
