// Opening and reading files with errors users can act on: the file named, the reason in a word.
import fs from 'node:fs';
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

/** A text file's contents; files ending in .gz are gunzipped. */
export function readText(file: string): string {
  const raw = readBytes(file);
  if (!file.endsWith('.gz')) return raw.toString('utf8');
  try {
    return zlib.gunzipSync(raw).toString('utf8');
  } catch (e) {
    throw new UserError(`${file}: not a valid gzip file (${(e as Error).message})`);
  }
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
