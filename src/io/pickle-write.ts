// The pickle torch.save writes for a dictionary of tensors (protocol 2), so that torch.load(...,
// weights_only=True) and our restricted unpickler (./pickle.ts) read it: each value is
// torch._utils._rebuild_tensor_v2(storage, offset, shape, stride, False, OrderedDict()), and each
// storage is a persistent id ('storage', torch.<Type>Storage, key, 'cpu', numel) resolved by the reader
// to the archive entry data/<key>. Opcodes per CPython's Lib/pickletools.py.
import type { DType } from '../tensor/dtype.js';

const STORAGE_TYPE: Partial<Record<DType, string>> = {
  float32: 'FloatStorage',
  float64: 'DoubleStorage',
  float16: 'HalfStorage',
  bfloat16: 'BFloat16Storage',
  int64: 'LongStorage',
  int32: 'IntStorage',
  int16: 'ShortStorage',
  int8: 'CharStorage',
  uint8: 'ByteStorage',
  bool: 'BoolStorage',
};

export interface TensorRecord {
  /** The storage's name in the archive (data/<key>). */
  key: string;
  dtype: DType;
  shape: number[];
}

const op = {
  PROTO: 0x80,
  STOP: 0x2e,
  EMPTY_DICT: 0x7d,
  EMPTY_TUPLE: 0x29,
  MARK: 0x28,
  TUPLE: 0x74,
  SETITEMS: 0x75,
  GLOBAL: 0x63,
  BINUNICODE: 0x58,
  BININT1: 0x4b,
  BININT2: 0x4d,
  BININT: 0x4a,
  LONG1: 0x8a,
  NEWFALSE: 0x89,
  BINPERSID: 0x51,
  REDUCE: 0x52,
} as const;

class Pickler {
  private readonly parts: Buffer[] = [];

  byte(b: number): void {
    this.parts.push(Buffer.from([b]));
  }

  str(s: string): void {
    const utf8 = Buffer.from(s, 'utf8');
    const len = Buffer.alloc(4);
    len.writeUInt32LE(utf8.length);
    this.parts.push(Buffer.from([op.BINUNICODE]), len, utf8);
  }

  int(n: number): void {
    if (!Number.isSafeInteger(n)) throw new RangeError(`pickle: ${n} is not a safe integer`);
    if (n >= 0 && n < 0x100) this.parts.push(Buffer.from([op.BININT1, n]));
    else if (n >= 0 && n < 0x10000) this.parts.push(Buffer.from([op.BININT2, n & 0xff, n >> 8]));
    else if (n >= -0x80000000 && n < 0x80000000) {
      const b = Buffer.alloc(5);
      b[0] = op.BININT;
      b.writeInt32LE(n, 1);
      this.parts.push(b);
    } else {
      const b = Buffer.alloc(8);
      b.writeBigInt64LE(BigInt(n));
      this.parts.push(Buffer.from([op.LONG1, 8]), b);
    }
  }

  global(module: string, name: string): void {
    this.parts.push(Buffer.from([op.GLOBAL]), Buffer.from(`${module}\n${name}\n`, 'ascii'));
  }

  intTuple(xs: number[]): void {
    if (xs.length === 0) return this.byte(op.EMPTY_TUPLE);
    this.byte(op.MARK);
    for (const x of xs) this.int(x);
    this.byte(op.TUPLE);
  }

  bytes(): Buffer {
    return Buffer.concat(this.parts);
  }
}

/** Contiguous strides of `shape`, in elements. */
export function contiguousStrides(shape: number[]): number[] {
  const out = new Array<number>(shape.length);
  let s = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    out[d] = s;
    s *= shape[d]!;
  }
  return out;
}

/** data.pkl for a plain dict {name: tensor}; each tensor is contiguous and owns its storage. */
export function pickleTensorDict(entries: [string, TensorRecord][]): Buffer {
  const p = new Pickler();
  p.byte(op.PROTO);
  p.byte(2);
  p.byte(op.EMPTY_DICT);
  if (entries.length > 0) {
    p.byte(op.MARK);
    for (const [name, t] of entries) {
      const storageType = STORAGE_TYPE[t.dtype];
      if (!storageType) throw new RangeError(`pickle: no torch storage type for ${t.dtype}`);
      p.str(name);
      p.global('torch._utils', '_rebuild_tensor_v2');
      p.byte(op.MARK);
      // The storage, as a persistent id.
      p.byte(op.MARK);
      p.str('storage');
      p.global('torch', storageType);
      p.str(t.key);
      p.str('cpu');
      p.int(t.shape.reduce((a, b) => a * b, 1));
      p.byte(op.TUPLE);
      p.byte(op.BINPERSID);
      p.int(0); // storage offset
      p.intTuple(t.shape);
      p.intTuple(contiguousStrides(t.shape));
      p.byte(op.NEWFALSE); // requires_grad
      p.global('collections', 'OrderedDict'); // backward hooks: an empty OrderedDict
      p.byte(op.EMPTY_TUPLE);
      p.byte(op.REDUCE);
      p.byte(op.TUPLE);
      p.byte(op.REDUCE);
    }
    p.byte(op.SETITEMS);
  }
  p.byte(op.STOP);
  return p.bytes();
}
