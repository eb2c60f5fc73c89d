// Creating tensors: from JS data, constant fills, ranges, random numbers, file bytes.
import { dtypeCode, dtypeOfTypedArray, type DType } from './dtype.js';
import { native } from './native.js';
import { Tensor, type Device } from './tensor.js';

export interface TensorOptions {
  dtype?: DType;
  device?: Device;
}

type Nested = number | boolean | Nested[];

function inferShape(data: Nested): number[] {
  const shape: number[] = [];
  let cur: Nested = data;
  while (Array.isArray(cur)) {
    shape.push(cur.length);
    if (cur.length === 0) break;
    cur = cur[0]!;
  }
  return shape;
}

function flatten(data: Nested, shape: number[], depth: number, out: number[]): void {
  if (depth === shape.length) {
    if (Array.isArray(data)) throw new TypeError('tensor(): ragged nested array');
    out.push(typeof data === 'boolean' ? (data ? 1 : 0) : data);
    return;
  }
  if (!Array.isArray(data) || data.length !== shape[depth]) throw new TypeError('tensor(): ragged nested array');
  for (const d of data) flatten(d, shape, depth + 1, out);
}

function packInto(values: ArrayLike<number>, dtype: DType): ArrayBufferView {
  switch (dtype) {
    case 'float32':
      return Float32Array.from(values);
    case 'float64':
      return Float64Array.from(values);
    case 'int64':
      return BigInt64Array.from(
        Array.from(values, (v) => {
          if (!Number.isInteger(v)) throw new TypeError(`int64 tensor from non-integer ${v}`);
          return BigInt(v);
        }),
      );
    case 'int32':
      return Int32Array.from(values);
    case 'int16':
      return Int16Array.from(values);
    case 'int8':
      return Int8Array.from(values);
    case 'uint8':
    case 'bool':
      return Uint8Array.from(values, (v) => (dtype === 'bool' ? (v ? 1 : 0) : v));
    case 'float16':
    case 'bfloat16':
      return Float32Array.from(values);
  }
}

/** A tensor from nested arrays, a flat typed array with `shape`, or a number (0-d).
 * Without a dtype: float32 for JS numbers, bool for JS booleans, the natural dtype of a typed array. */
export function tensor(data: Nested | ArrayBufferView, opts: TensorOptions & { shape?: number[] } = {}): Tensor {
  const device = opts.device ?? 'cpu';
  if (ArrayBuffer.isView(data)) {
    const natural = dtypeOfTypedArray(data);
    const shape = opts.shape ?? [(data as unknown as ArrayLike<unknown>).length];
    const t = new Tensor(native.fromBuffer(data, dtypeCode(natural), shape, null));
    return convert(t, opts.dtype ?? natural, device);
  }
  const shape = opts.shape ?? inferShape(data);
  const flat: number[] = [];
  if (opts.shape) flatten(data, inferShape(data), 0, flat);
  else flatten(data, shape, 0, flat);
  const isBool = typeof (Array.isArray(data) ? flatFirst(data) : data) === 'boolean';
  const dtype = opts.dtype ?? (isBool ? 'bool' : 'float32');
  const staging: DType = dtype === 'float16' || dtype === 'bfloat16' ? 'float32' : dtype;
  const t = new Tensor(native.fromBuffer(packInto(flat, staging), dtypeCode(staging), shape, null));
  return convert(t, dtype, device);
}

function flatFirst(data: Nested): Nested | undefined {
  let cur: Nested | undefined = data;
  while (Array.isArray(cur)) cur = cur[0];
  return cur;
}

/** Converts and disposes the intermediate when a conversion was needed. */
function convert(t: Tensor, dtype: DType, device: Device): Tensor {
  if (t.dtype === dtype && device === 'cpu') return t;
  const out = t.to({ dtype, device });
  t.dispose();
  return out;
}

const dt = (o: TensorOptions, d: DType = 'float32') => dtypeCode(o.dtype ?? d);
const dev = (o: TensorOptions) => o.device ?? 'cpu';

export function empty(shape: number[], o: TensorOptions = {}): Tensor {
  return new Tensor(native.empty(shape, dt(o), dev(o)));
}
export function zeros(shape: number[], o: TensorOptions = {}): Tensor {
  return new Tensor(native.zeros(shape, dt(o), dev(o)));
}
export function ones(shape: number[], o: TensorOptions = {}): Tensor {
  return new Tensor(native.ones(shape, dt(o), dev(o)));
}
export function full(shape: number[], value: number, o: TensorOptions = {}): Tensor {
  return new Tensor(native.full(shape, value, dt(o), dev(o)));
}
/** arange(end) or arange(start, end, step); int64 unless a dtype is given. */
export function arange(startOrEnd: number, end?: number, step = 1, o: TensorOptions = {}): Tensor {
  const [s, e] = end === undefined ? [0, startOrEnd] : [startOrEnd, end];
  return new Tensor(native.arange(s, e, step, dt(o, 'int64'), dev(o)));
}
/** Standard normal samples from the seeded generator (manualSeed). */
export function randn(shape: number[], o: TensorOptions = {}): Tensor {
  return new Tensor(native.randn(shape, dt(o), dev(o)));
}
/** Uniform [0, 1) samples from the seeded generator. */
export function rand(shape: number[], o: TensorOptions = {}): Tensor {
  return new Tensor(native.rand(shape, dt(o), dev(o)));
}
export function randint(low: number, high: number, shape: number[], o: TensorOptions = {}): Tensor {
  return new Tensor(native.randint(low, high, shape, dt(o, 'int64'), dev(o)));
}
export function eye(n: number, o: TensorOptions = {}): Tensor {
  return new Tensor(native.eye(n, dt(o), dev(o)));
}

/** Reads `nbytes` at `offset` of a file straight into a new CPU tensor (no intermediate copy). */
export function fromFile(file: string, offset: number, nbytes: number, dtype: DType, shape: number[]): Tensor {
  return new Tensor(native.fromFile(file, offset, nbytes, dtypeCode(dtype), shape));
}

/** Wraps raw little-endian bytes (e.g. a safetensors or pickle payload) as a tensor of `dtype`. */
export function fromBytes(bytes: Uint8Array, dtype: DType, shape: number[]): Tensor {
  return new Tensor(native.fromBuffer(bytes, dtypeCode(dtype), shape, null));
}
