// The addon's op families (unary, binary, scalar, in-place, reductions) and loss reductions take a code:
// the index of the op in the addon's table, bound here by name once at load (native/README.md), so the
// two sides cannot drift out of step.
import { native } from './native.js';

function codes(names: string[]): Record<string, number> {
  return Object.fromEntries(names.map((n, i) => [n, i]));
}

export const UNARY = codes(native.unaryNames());
export const BINARY = codes(native.binaryNames());
export const SCALAR = codes(native.scalarNames());
export const INPLACE = codes(native.inplaceNames());
export const REDUCE = codes(native.reduceNames());
export const REDUCTION = codes(native.reductionNames());
