// Reading JSON Lines and JSON-array files; a malformed record is refused naming its file and line.
import fs from 'node:fs';
import zlib from 'node:zlib';
import { UserError } from '../util/errors.js';

export interface Located<T> { value: T; line: number }

/** A text file's contents; files ending in .gz are gunzipped. */
export function readText(file: string): string {
  let raw: Buffer;
  try {
    raw = fs.readFileSync(file);
  } catch (e) {
    throw new UserError(`${file}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  if (!file.endsWith('.gz')) return raw.toString('utf8');
  try {
    return zlib.gunzipSync(raw).toString('utf8');
  } catch (e) {
    throw new UserError(`${file}: not a valid gzip file (${(e as Error).message})`);
  }
}

/** Each non-blank line parsed as JSON, with its 1-based line number. */
export function readJsonl(file: string): Located<unknown>[] {
  const out: Located<unknown>[] = [];
  readText(file).split('\n').forEach((text, i) => {
    if (text.trim() === '') return;
    try {
      out.push({ value: JSON.parse(text), line: i + 1 });
    } catch (e) {
      throw new UserError(`${file}:${i + 1}: not valid JSON (${(e as Error).message})`);
    }
  });
  return out;
}

/** A JSON array file (records numbered by index) or JSON Lines (numbered by line), detected by content. */
export function readRecords(file: string): { records: Located<unknown>[]; unit: 'line' | 'record' } {
  const text = readText(file);
  const first = text.trimStart()[0];
  if (first === '[') {
    let arr: unknown;
    try {
      arr = JSON.parse(text);
    } catch (e) {
      throw new UserError(`${file}: not valid JSON (${(e as Error).message})`);
    }
    if (!Array.isArray(arr)) throw new UserError(`${file}: expected a JSON array of records`);
    return { records: arr.map((value, i) => ({ value, line: i + 1 })), unit: 'record' };
  }
  return { records: readJsonl(file), unit: 'line' };
}
