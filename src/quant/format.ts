// The quantisation formats of a frozen base (docs/design.md §13) and parsing them from flags and configs.
import { UserError } from '../util/errors.js';

/** `nf4`: QLoRA's 4-bit NormalFloat, blocks of 64, float32 absmax per block (Dettmers et al. 2023).
 * `int8`: one absmax/127 scale per output row. */
export const QUANT_FORMATS = ['nf4', 'int8'] as const;
export type QuantFormat = (typeof QUANT_FORMATS)[number];

/** The addon's format codes (native/kernels/quant.cc). */
export const QUANT_CODES: Record<QuantFormat, number> = { int8: 0, nf4: 1 };

export function isQuantFormat(s: unknown): s is QuantFormat {
  return typeof s === 'string' && (QUANT_FORMATS as readonly string[]).includes(s);
}

/** A format from a flag or config field; `where` names it in the error. */
export function parseQuantFormat(s: string, where = '--quantize'): QuantFormat {
  if (isQuantFormat(s)) return s;
  const hint =
    s === 'nf4-dq'
      ? ' (double quantisation of the absmax values is not implemented: it would save a further 0.37 bits per weight)'
      : '';
  throw new UserError(`${where}: '${s}' is not a quantisation format (nf4, int8)${hint}`);
}
