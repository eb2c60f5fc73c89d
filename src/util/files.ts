// Opening and reading files with errors users can act on: the file named, the reason in a word.
import fs from 'node:fs';
import { isUtf8 } from 'node:buffer';
import zlib from 'node:zlib';
import { UserError } from './errors.js';

function reason(e: unknown): string {
  return (e as NodeJS.ErrnoException).code ?? (e as Error).message;
}

/** A read-only file descriptor (close it with fs.closeSync). */
export function openForRead(file: string): number {
  try {
    return fs.openSync(file, 'r');
  } catch (e) {
    throw new UserError(`${file}: cannot open (${reason(e)})`);
  }
}

export function readBytes(file: string): Buffer {
  try {
    return fs.readFileSync(file);
  } catch (e) {
    throw new UserError(`${file}: cannot read (${reason(e)})`);
  }
}

/** UTF-8 text, or a UserError naming the first line that is not (Buffer.toString would silently
 * turn bad bytes into U+FFFD and train on them). */
function decodeUtf8(file: string, bytes: Buffer): string {
  if (isUtf8(bytes)) return bytes.toString('utf8');
  let start = 0;
  for (let line = 1; ; line++) {
    const end = bytes.indexOf(0x0a, start);
    const part = bytes.subarray(start, end < 0 ? bytes.length : end);
    if (!isUtf8(part) || end < 0) throw new UserError(`${file}:${line}: not UTF-8 text`);
    start = end + 1;
  }
}

/** Decompressed .gz files are limited to this size (a small file can inflate to any size). */
const MAX_GUNZIP_BYTES = 2 * 2 ** 30 - 1;

/** A text file's contents (UTF-8); files ending in .gz are gunzipped. */
export function readText(file: string): string {
  const raw = readBytes(file);
  if (!file.endsWith('.gz')) return decodeUtf8(file, raw);
  let bytes: Buffer;
  try {
    bytes = zlib.gunzipSync(raw, { maxOutputLength: MAX_GUNZIP_BYTES });
  } catch (e) {
    throw new UserError(`${file}: not a valid gzip file, or it inflates past 2 GiB (${(e as Error).message})`);
  }
  return decodeUtf8(file, bytes);
}

export function readJson(file: string): unknown {
  const text = readText(file);
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new UserError(`${file}: not valid JSON (${(e as Error).message})`);
  }
}

/** A JSON object file (refused naming the file when it holds anything else). */
export function readJsonObject(file: string): Record<string, unknown> {
  const v = readJson(file);
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new UserError(`${file}: expected a JSON object`);
  return v as Record<string, unknown>;
}
