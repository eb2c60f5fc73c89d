// TensorBoard event files, written directly: a TFRecord stream (tensorflow/core/lib/io/record_writer.cc:
// uint64 length, masked CRC32C of the length, the bytes, masked CRC32C of the bytes) of Event protos
// (tensorboard/compat/proto/event.proto: wall_time = 1 (double), step = 2 (int64), file_version = 3,
// summary = 5; summary.proto: Summary.value = 1, Value.tag = 1, Value.simple_value = 2 (float)).
// The protobuf wire encoding of these few fields is written by hand (protobuf.dev/programming-guides/encoding).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

// ---- CRC32C (Castagnoli), as TFRecord frames use it ------------------------------------------------
const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0x82f63b78 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

export function crc32c(data: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < data.length; i++) c = CRC_TABLE[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** TFRecord's masked CRC: rotate right by 15 bits and add a constant. */
export function maskedCrc32c(data: Uint8Array): number {
  const c = crc32c(data);
  return ((((c >>> 15) | (c << 17)) >>> 0) + 0xa282ead8) >>> 0;
}

export function tfRecord(data: Uint8Array): Buffer {
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(data.length));
  const head = Buffer.alloc(4);
  head.writeUInt32LE(maskedCrc32c(len));
  const tail = Buffer.alloc(4);
  tail.writeUInt32LE(maskedCrc32c(data));
  return Buffer.concat([len, head, Buffer.from(data), tail]);
}

// ---- protobuf wire format ---------------------------------------------------------------------------
function varint(n: number | bigint): Buffer {
  let v = BigInt(n);
  if (v < 0n) v += 1n << 64n; // int64: two's complement in 10 bytes
  const out: number[] = [];
  do {
    let b = Number(v & 0x7fn);
    v >>= 7n;
    if (v > 0n) b |= 0x80;
    out.push(b);
  } while (v > 0n);
  return Buffer.from(out);
}

const key = (field: number, wire: number) => varint((field << 3) | wire);

function lengthDelimited(field: number, bytes: Uint8Array): Buffer {
  return Buffer.concat([key(field, 2), varint(bytes.length), bytes]);
}

function double(field: number, v: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeDoubleLE(v);
  return Buffer.concat([key(field, 1), b]);
}

function float(field: number, v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeFloatLE(v);
  return Buffer.concat([key(field, 5), b]);
}

function event(wallTime: number, step: number, rest: Buffer): Buffer {
  return Buffer.concat([double(1, wallTime), key(2, 0), varint(step), rest]);
}

/** Event{file_version: "brain.Event:2"}: the first record of every event file. */
function versionEvent(wallTime: number): Buffer {
  return Buffer.concat([double(1, wallTime), lengthDelimited(3, Buffer.from('brain.Event:2'))]);
}

/** Event{step, summary: Summary{value: [{tag, simple_value}...]}}. */
export function scalarsEvent(wallTime: number, step: number, scalars: Record<string, number>): Buffer {
  const values = Object.entries(scalars).map(([tag, v]) =>
    lengthDelimited(1, Buffer.concat([lengthDelimited(1, Buffer.from(tag, 'utf8')), float(2, v)])),
  );
  return event(wallTime, step, lengthDelimited(5, Buffer.concat(values)));
}

/** One event file in `dir` (TensorBoard shows each folder as a run), appended record by record. */
export class EventWriter {
  readonly file: string;

  constructor(dir: string) {
    fs.mkdirSync(dir, { recursive: true });
    const now = Date.now() / 1000;
    // The name TensorBoard looks for: events.out.tfevents.<seconds>.<host>[.<suffix>]
    this.file = path.join(dir, `events.out.tfevents.${Math.floor(now)}.${os.hostname()}.${process.pid}.mixlora`);
    fs.writeFileSync(this.file, tfRecord(versionEvent(now)), { flag: 'wx' });
  }

  /** Scalars at `step`; non-finite and null values are skipped. */
  scalars(step: number, values: Record<string, number | null | undefined>): void {
    const finite = Object.fromEntries(
      Object.entries(values).filter((e): e is [string, number] => typeof e[1] === 'number' && Number.isFinite(e[1])),
    );
    if (Object.keys(finite).length === 0) return;
    fs.appendFileSync(this.file, tfRecord(scalarsEvent(Date.now() / 1000, step, finite)));
  }
}
