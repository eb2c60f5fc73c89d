// Reading typed fields out of parsed JSON/YAML with errors that name the file and the field.
import { UserError } from './errors.js';

type Obj = Record<string, unknown>;

/** A parsed value as the user wrote it: JSON, except the numbers JSON cannot write (`1e999` and YAML's
 * `.inf` parse as Infinity, `.nan` as NaN), which JSON.stringify would show as null. */
export function showValue(v: unknown): string {
  const mark = '\u0001';
  const text = JSON.stringify(v, (_k, x: unknown) =>
    typeof x === 'number' && !Number.isFinite(x) ? `${mark}${x}${mark}` : x,
  ) as string | undefined;
  return text === undefined ? String(v) : text.replace(/"\\u0001(-?Infinity|NaN)\\u0001"/g, '$1');
}

export class Fields {
  readonly seen = new Set<string>();

  /** `locate(key)`, when given, names where a field is (e.g. "train.yaml:12: adapters[0]"). */
  constructor(
    readonly obj: Obj,
    readonly where: string,
    readonly locate?: (key: string) => string,
  ) {
    if (obj === null || typeof obj !== 'object' || Array.isArray(obj))
      throw new UserError(`${where}: expected an object`);
  }

  static of(value: unknown, where: string, locate?: (key: string) => string): Fields {
    return new Fields(value as Obj, where, locate);
  }

  fail(key: string, msg: string): never {
    throw new UserError(`${this.locate ? this.locate(key) : this.where}: field '${key}' ${msg}`);
  }

  has(key: string): boolean {
    return this.obj[key] !== undefined && this.obj[key] !== null;
  }

  raw(key: string): unknown {
    this.seen.add(key);
    return this.obj[key];
  }

  private value(key: string): unknown {
    this.seen.add(key);
    return this.obj[key];
  }

  int(key: string, opts: { default?: number; min?: number; max?: number } = {}): number {
    const v = this.value(key);
    if (v === undefined || v === null) {
      if (opts.default !== undefined) return opts.default;
      this.fail(key, 'is required');
    }
    if (typeof v === 'number' && !Number.isFinite(v)) this.fail(key, `must be a finite integer, got ${showValue(v)}`);
    if (typeof v !== 'number' || !Number.isSafeInteger(v)) this.fail(key, `must be an integer, got ${showValue(v)}`);
    this.range(key, v, opts);
    return v;
  }

  optInt(key: string, opts: { min?: number; max?: number } = {}): number | null {
    return this.has(key) ? this.int(key, opts) : (this.seen.add(key), null);
  }

  num(key: string, opts: { default?: number; min?: number; max?: number; exclusiveMin?: number } = {}): number {
    const v = this.value(key);
    if (v === undefined || v === null) {
      if (opts.default !== undefined) return opts.default;
      this.fail(key, 'is required');
    }
    if (typeof v !== 'number') this.fail(key, `must be a number, got ${showValue(v)}`);
    if (!Number.isFinite(v)) this.fail(key, `must be a finite number, got ${showValue(v)}`);
    if (opts.exclusiveMin !== undefined && !(v > opts.exclusiveMin))
      this.fail(key, `must be > ${opts.exclusiveMin}, got ${v}`);
    this.range(key, v, opts);
    return v;
  }

  optNum(key: string, opts: { min?: number; max?: number; exclusiveMin?: number } = {}): number | null {
    return this.has(key) ? this.num(key, opts) : (this.seen.add(key), null);
  }

  bool(key: string, def?: boolean): boolean {
    const v = this.value(key);
    if (v === undefined || v === null) {
      if (def !== undefined) return def;
      this.fail(key, 'is required');
    }
    if (typeof v !== 'boolean') this.fail(key, `must be true or false, got ${showValue(v)}`);
    return v;
  }

  str<T extends string = string>(key: string, opts: { default?: T; oneOf?: readonly T[] } = {}): T {
    const v = this.value(key);
    if (v === undefined || v === null) {
      if (opts.default !== undefined) return opts.default;
      this.fail(key, 'is required');
    }
    if (typeof v !== 'string') this.fail(key, `must be a string, got ${showValue(v)}`);
    if (opts.oneOf && !opts.oneOf.includes(v as T))
      this.fail(key, `must be one of ${opts.oneOf.join(', ')}; got '${v}'`);
    return v as T;
  }

  optStr(key: string): string | null {
    return this.has(key) ? this.str(key) : (this.seen.add(key), null);
  }

  /** Refuses keys not read so far (for our own config files, where a typo must not pass silently). */
  rejectUnknown(extraKnown: string[] = []): void {
    for (const k of Object.keys(this.obj)) {
      if (!this.seen.has(k) && !extraKnown.includes(k))
        throw new UserError(`${this.locate ? this.locate(k) : this.where}: unknown field '${k}'`);
    }
  }

  private range(key: string, v: number, opts: { min?: number; max?: number }): void {
    if (opts.min !== undefined && v < opts.min) this.fail(key, `must be >= ${opts.min}, got ${v}`);
    if (opts.max !== undefined && v > opts.max) this.fail(key, `must be <= ${opts.max}, got ${v}`);
  }
}
