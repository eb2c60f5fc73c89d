// safetensors: reading (validated, straight into tensor buffers) and writing (atomic).
// Format: u64 little-endian header length N, N bytes of JSON, then the data section. The header maps
// tensor names to {dtype, shape, data_offsets: [begin, end]} (relative to the data section), plus an
// optional "__metadata__" of string values. Files from others are untrusted: everything is checked
// before a byte of tensor data is read.
import fs from 'node:fs';
import { fromFile } from '../tensor/create.js';
import { ITEM_SIZE, type DType } from '../tensor/dtype.js';
import { noGrad } from '../tensor/autograd.js';
import type { Device, Tensor } from '../tensor/tensor.js';
import { UserError } from '../util/errors.js';
import { openForRead } from '../util/files.js';
import { writeAll, writeAtomic } from './atomic.js';

const TO_DTYPE: Record<string, DType> = {
  F64: 'float64',
  F32: 'float32',
  F16: 'float16',
  BF16: 'bfloat16',
  I64: 'int64',
  I32: 'int32',
  I16: 'int16',
  I8: 'int8',
  U8: 'uint8',
  BOOL: 'bool',
};
const FROM_DTYPE = Object.fromEntries(Object.entries(TO_DTYPE).map(([k, v]) => [v, k])) as Record<DType, string>;
const MAX_HEADER = 100 * 2 ** 20;

export interface TensorEntry {
  name: string;
  dtype: DType;
  shape: number[];
  /** Absolute byte offset in the file. */
  offset: number;
  nbytes: number;
}

export interface SafetensorsHeader {
  file: string;
  tensors: Map<string, TensorEntry>;
  metadata: Record<string, string>;
}

function bad(file: string, msg: string): never {
  throw new UserError(`${file}: not a valid safetensors file: ${msg}`);
}

export function readHeader(file: string): SafetensorsHeader {
  const fd = openForRead(file);
  try {
    const size = fs.fstatSync(fd).size;
    if (size < 8) bad(file, `${size} bytes is too short for the 8-byte header length`);
    const lenBuf = Buffer.alloc(8);
    fs.readSync(fd, lenBuf, 0, 8, 0);
    const n = lenBuf.readBigUInt64LE(0);
    if (n > BigInt(MAX_HEADER)) bad(file, `header length ${n} is over the 100 MiB limit`);
    const headerLen = Number(n);
    if (8 + headerLen > size) bad(file, `header length ${headerLen} runs past the end of the file (${size} bytes)`);
    const headerBuf = Buffer.alloc(headerLen);
    if (fs.readSync(fd, headerBuf, 0, headerLen, 8) !== headerLen) bad(file, 'short read of the header');
    return parseHeader(file, headerBuf.toString('utf8'), 8 + headerLen, size);
  } finally {
    fs.closeSync(fd);
  }
}

function parseHeader(file: string, text: string, dataStart: number, fileSize: number): SafetensorsHeader {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    bad(file, `header is not JSON (${(e as Error).message})`);
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) bad(file, 'header is not a JSON object');
  const dataSize = fileSize - dataStart;
  const tensors = new Map<string, TensorEntry>();
  let metadata: Record<string, string> = {};
  const spans: [number, number, string][] = [];
  for (const [name, v] of Object.entries(json as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (
        v === null ||
        typeof v !== 'object' ||
        Array.isArray(v) ||
        Object.values(v).some((x) => typeof x !== 'string')
      ) {
        bad(file, '__metadata__ must be an object of strings');
      }
      metadata = v as Record<string, string>;
      continue;
    }
    if (v === null || typeof v !== 'object' || Array.isArray(v)) bad(file, `entry '${name}' is not an object`);
    const e = v as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    const dtype = typeof e.dtype === 'string' ? TO_DTYPE[e.dtype] : undefined;
    if (!dtype)
      bad(
        file,
        `tensor '${name}' has unsupported dtype ${JSON.stringify(e.dtype)} (supported: ${Object.keys(TO_DTYPE).join(', ')})`,
      );
    if (!Array.isArray(e.shape) || !e.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      bad(file, `tensor '${name}' has an invalid shape ${JSON.stringify(e.shape)}`);
    }
    const shape = e.shape as number[];
    const off = e.data_offsets;
    if (
      !Array.isArray(off) ||
      off.length !== 2 ||
      !off.every((x) => Number.isSafeInteger(x) && x >= 0) ||
      off[0] > off[1]
    ) {
      bad(file, `tensor '${name}' has invalid data_offsets ${JSON.stringify(off)}`);
    }
    const [begin, end] = off as [number, number];
    if (end > dataSize)
      bad(
        file,
        `tensor '${name}' data [${begin}, ${end}) lies outside the data section (${dataSize} bytes; file truncated?)`,
      );
    const numel = shape.reduce((a, b) => a * b, 1);
    if (!Number.isSafeInteger(numel * ITEM_SIZE[dtype]) || numel * ITEM_SIZE[dtype] !== end - begin) {
      bad(
        file,
        `tensor '${name}' of shape [${shape.join(', ')}] and ${e.dtype} needs ${numel * ITEM_SIZE[dtype]} bytes but data_offsets give ${end - begin}`,
      );
    }
    tensors.set(name, { name, dtype, shape, offset: dataStart + begin, nbytes: end - begin });
    if (end > begin) spans.push([begin, end, name]);
  }
  spans.sort((a, b) => a[0] - b[0]);
  for (let i = 1; i < spans.length; i++) {
    if (spans[i]![0] < spans[i - 1]![1]) bad(file, `tensors '${spans[i - 1]![2]}' and '${spans[i]![2]}' overlap`);
  }
  return { file, tensors, metadata };
}

/** Loads one tensor of a parsed file, converted to `dtype`/`device` when given. */
export function loadTensor(
  header: SafetensorsHeader,
  name: string,
  opts: { dtype?: DType; device?: Device } = {},
): Tensor {
  const e = header.tensors.get(name);
  if (!e) throw new UserError(`${header.file}: no tensor named '${name}'`);
  const raw = fromFile(header.file, e.offset, e.nbytes, e.dtype, e.shape);
  if ((opts.dtype === undefined || opts.dtype === e.dtype) && (opts.device === undefined || opts.device === 'cpu'))
    return raw;
  const out = noGrad(() => raw.to({ dtype: opts.dtype ?? e.dtype, device: opts.device ?? 'cpu' }));
  raw.dispose();
  return out;
}

/** Loads every tensor of a file (small files: adapters, test fixtures). */
export function loadAll(
  file: string,
  opts: { dtype?: DType; device?: Device } = {},
): { tensors: Map<string, Tensor>; metadata: Record<string, string> } {
  const h = readHeader(file);
  const tensors = new Map<string, Tensor>();
  for (const name of h.tensors.keys()) tensors.set(name, loadTensor(h, name, opts));
  return { tensors, metadata: h.metadata };
}

/** Writes tensors (any device; stored as their own dtype) atomically. */
export function saveSafetensors(
  file: string,
  tensors: Map<string, Tensor> | Record<string, Tensor>,
  metadata: Record<string, string> = {},
): void {
  const entries = tensors instanceof Map ? [...tensors.entries()] : Object.entries(tensors);
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length) header.__metadata__ = metadata;
  let offset = 0;
  for (const [name, t] of entries) {
    const nbytes = t.numel * ITEM_SIZE[t.dtype];
    header[name] = { dtype: FROM_DTYPE[t.dtype], shape: [...t.shape], data_offsets: [offset, offset + nbytes] };
    offset += nbytes;
  }
  let json = JSON.stringify(header);
  // Pad the header with spaces so the data section starts 8-byte aligned (as the reference writer does).
  json += ' '.repeat((8 - ((8 + Buffer.byteLength(json)) % 8)) % 8);
  const headerBytes = Buffer.from(json, 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(headerBytes.length));
  writeAtomic(file, (fd) => {
    writeAll(fd, len);
    writeAll(fd, headerBytes);
    for (const [, t] of entries) writeAll(fd, new Uint8Array(t.toTypedArray().buffer));
  });
}
