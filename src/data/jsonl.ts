// Reading JSON Lines and JSON-array files; a malformed record is refused naming its file and line.
import { UserError } from '../util/errors.js';
import { readText } from '../util/files.js';

export interface Located<T> {
  value: T;
  line: number;
}

/** Each non-blank line parsed as JSON, with its 1-based line number. */
export function readJsonl(file: string): Located<unknown>[] {
  const out: Located<unknown>[] = [];
  readText(file)
    .split('\n')
    .forEach((text, i) => {
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
