// A frozen linear weight [out, in] held quantised (QLoRA-style): only the codes and their scales stay
// resident; the full-precision weight exists while a layer runs (native/kernels/quant.cc) and is freed after.
import { native } from '../tensor/native.js';
import { Tensor, type Device } from '../tensor/tensor.js';
import { dtypeCode, ITEM_SIZE, type DType } from '../tensor/dtype.js';
import { QUANT_CODES, type QuantFormat } from './format.js';

export class QuantizedWeight {
  private constructor(
    readonly format: QuantFormat,
    /** [out, in] of the full-precision weight. */
    readonly shape: readonly [number, number],
    /** int8: the codes [out, in] int8; nf4: two 4-bit codes per byte [ceil(out·in / 2)] uint8, the first
     * value in the high nibble (bitsandbytes' packing). */
    readonly data: Tensor,
    /** int8: absmax / 127 per row [out]; nf4: absmax per block of 64 values [ceil(out·in / 64)]; float32. */
    readonly scales: Tensor,
  ) {}

  /** Quantises w [out, in] (any floating dtype, computed in float32); w itself is left to the caller.
   * The codes and scales are kept: dispose() frees them. `portable`: the tensor-op version that every
   * device runs, on the CPU too (where loops compute the same values faster); for tests. */
  static quantize(w: Tensor, format: QuantFormat, opts: { portable?: boolean } = {}): QuantizedWeight {
    if (w.ndim !== 2) throw new RangeError(`quantize: a weight [out, in] expected, got [${w.shape.join(', ')}]`);
    const [data, scales] = native.quantize(w.id, QUANT_CODES[format], opts.portable ?? false);
    return new QuantizedWeight(format, [w.size(0), w.size(1)], new Tensor(data).keep(), new Tensor(scales).keep());
  }

  /** A quantised weight from its codes and scales (a sharded base's gathered copy): they become its own. */
  static fromParts(
    format: QuantFormat,
    shape: readonly [number, number],
    data: Tensor,
    scales: Tensor,
  ): QuantizedWeight {
    return new QuantizedWeight(format, shape, data.keep(), scales.keep());
  }

  get numel(): number {
    return this.shape[0] * this.shape[1];
  }

  get device(): Device {
    return this.data.device;
  }

  /** Bytes held: codes and scales. */
  get bytes(): number {
    return this.data.numel * ITEM_SIZE[this.data.dtype] + this.scales.numel * ITEM_SIZE[this.scales.dtype];
  }

  get isDisposed(): boolean {
    return this.data.isDisposed;
  }

  /** The full-precision weight [out, in] in `dtype` (a new tensor, owned by the current scope). */
  dequantize(dtype: DType, opts: { portable?: boolean } = {}): Tensor {
    return new Tensor(
      native.dequantize(
        this.data.id,
        this.scales.id,
        QUANT_CODES[this.format],
        [...this.shape],
        dtypeCode(dtype),
        opts.portable ?? false,
      ),
    );
  }

  /** x Wᵀ for x [.., in] -> [.., out] in x's dtype. The dequantised W is freed on return; the input
   * gradient dequantises it again rather than keeping it for the backward. */
  linear(x: Tensor): Tensor {
    return new Tensor(
      native.quantLinear(x.id, this.data.id, this.scales.id, QUANT_CODES[this.format], [...this.shape]),
    );
  }

  dispose(): void {
    this.data.dispose();
    this.scales.dispose();
  }
}
