// The names users write for a compute dtype and a device (command-line flags, training configs),
// checked against what this libtorch offers. `where` names the flag or field in the message.
import { UserError } from '../util/errors.js';
import { isDType, isFloating, type DType } from './dtype.js';
import { cuda } from './runtime.js';
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
        `${where} ${s}: this libtorch has no usable CUDA (build the addon against a CUDA libtorch; see README)`,
      );
    return s as Device;
  }
  throw new UserError(`${where}: '${s}' is not cpu, cuda or cuda:N`);
}
