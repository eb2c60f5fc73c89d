// JSON Schemas for measuring what compiling a grammar costs (bench/structured.ts --calibrate): one of each
// feature a response_format may use (bounded strings, pattern classes and repetitions, formats, enums,
// integer ranges, wide and deep objects, arrays), random schemas mixing them, and shapes that pile one
// feature up within the size and depth bounds. Seeded: the same corpus every run.
import { Rng } from '../src/util/random.js';

type Schema = Record<string, unknown>;

const props = (n: number, f: (i: number) => Schema, prefix = 'property_'): Schema => ({
  type: 'object',
  properties: Object.fromEntries(Array.from({ length: n }, (_, i) => [`${prefix}${i}`, f(i)])),
});

/** One schema per feature, by name. */
export function featureSchemas(): Record<string, Schema> {
  const out: Record<string, Schema> = {
    'any object': { type: 'object' },
    string: { type: 'string' },
    integer: { type: 'integer' },
    number: { type: 'number' },
    'integer 0..120': { type: 'integer', minimum: 0, maximum: 120 },
    'integer 1900..2100': { type: 'integer', minimum: 1900, maximum: 2100 },
    'enum 12 months': {
      enum: ['January', 'February', 'March', 'April', 'May', 'June', 'July', 'August', 'September', 'October'],
    },
    'enum 100 values': { enum: Array.from({ length: 100 }, (_, i) => `value-${i}`) },
    'enum 500 values': { enum: Array.from({ length: 500 }, (_, i) => `v${i}`) },
    'object 30 optional': props(30, () => ({ type: 'integer' })),
    'object 100 optional': props(100, () => ({ type: 'integer' })),
    'object 100 required': {
      ...props(100, () => ({ type: 'string' })),
      required: Array.from({ length: 100 }, (_, i) => `property_${i}`),
    },
    'array maxItems 1000': { type: 'array', items: { type: 'integer' }, maxItems: 1000 },
    'array minItems 256': { type: 'array', items: { type: 'string' }, minItems: 256 },
    'anyOf 50 objects': {
      anyOf: Array.from({ length: 50 }, (_, i) => ({
        type: 'object',
        properties: { [`k${i}`]: { type: 'integer' } },
        required: [`k${i}`],
      })),
    },
    'nested 10 objects': (() => {
      let s: Schema = { type: 'integer' };
      for (let i = 0; i < 10; i++) s = { type: 'object', properties: { a: s, b: { type: 'string' } }, required: ['a'] };
      return s;
    })(),
    'person (README)': {
      type: 'object',
      properties: {
        name: { type: 'string', maxLength: 8 },
        age: { type: 'integer', minimum: 0, maximum: 120 },
        mood: { enum: ['happy', 'sad'] },
      },
      required: ['name', 'age', 'mood'],
      additionalProperties: false,
    },
  };
  for (const f of ['date', 'time', 'date-time', 'email', 'uri', 'uri-reference', 'uuid', 'ipv4', 'ipv6', 'hostname'])
    out[`format ${f}`] = { type: 'string', format: f };
  for (const n of [1, 2, 4, 8, 12, 16, 24, 32]) {
    out[`maxLength ${n}`] = { type: 'string', maxLength: n };
    out[`minLength ${n}`] = { type: 'string', minLength: n };
    out[`minLength = maxLength ${n}`] = { type: 'string', minLength: n, maxLength: n };
  }
  const classes: Record<string, string> = {
    any: '.',
    '[^x]': '[^x]',
    '[a-z]': '[a-z]',
    '\\w': '\\w',
    '[0-9]': '[0-9]',
  };
  for (const [name, c] of Object.entries(classes))
    for (const q of ['{4}', '{16}', '{0,8}', '{0,16}', '{8,16}', '{4,}', '{16,}', '*', '+'])
      out[`pattern ${name}${q}`] = { type: 'string', pattern: `^${c}${q}$` };
  out['pattern ([a-z]{5}){5}'] = { type: 'string', pattern: '^([a-z]{5}){5}$' };
  out['10 × maxLength 8..17'] = props(10, (i) => ({ type: 'string', maxLength: 8 + i }));
  out['10 × pattern [^"]*'] = props(10, (i) => ({ type: 'string', pattern: `^[^"]*y${i}$` }));
  return out;
}

const PATTERNS = [
  '^[a-z]{%a,%b}$',
  '^[A-Z][a-z]{%a,%b}$',
  '^\\d{%a}-\\d{%b}$',
  '^.{%a,%b}$',
  '^[^@]{%a,%b}@[a-z]+$',
  '^(ab|cd){%a,%b}$',
  '^\\w{%a,%b}$',
  '^[a-zA-Z0-9_]+$',
  '^[0-9a-f]{%a}$',
  '^\\S{%a,%b}$',
];
const FORMATS = ['date', 'time', 'date-time', 'email', 'uri', 'uuid', 'ipv4', 'ipv6', 'hostname', 'uri-reference'];

/** A random schema mixing the features (objects, arrays, anyOf, strings with bounds, patterns or formats,
 * integers with ranges, enums, consts). */
export function randomSchema(rng: Rng, depth = 0): Schema {
  const r = rng.next() / 2 ** 32;
  const int = (lo: number, hi: number) => lo + rng.below(hi - lo + 1);
  const pick = <T>(a: T[]) => a[rng.below(a.length)]!;
  if (depth < 3 && r < 0.3) {
    const p: Schema = {};
    for (let i = 0, n = int(1, 8); i < n; i++) p[`f${depth}_${i}_${int(0, 99)}`] = randomSchema(rng, depth + 1);
    const keys = Object.keys(p);
    const o: Schema = { type: 'object', properties: p, required: keys.filter(() => rng.below(10) < 6) };
    if (rng.below(2) === 0) o.additionalProperties = false;
    return o;
  }
  if (depth < 3 && r < 0.45) {
    const o: Schema = { type: 'array', items: randomSchema(rng, depth + 1) };
    if (rng.below(2) === 0) o.maxItems = int(1, 20);
    if (rng.below(10) < 3) o.minItems = int(0, (o.maxItems as number | undefined) ?? 5);
    return o;
  }
  if (depth < 3 && r < 0.5) return { anyOf: [randomSchema(rng, depth + 1), randomSchema(rng, depth + 1)] };
  if (r < 0.75) {
    const o: Schema = { type: 'string' };
    const k = rng.below(100);
    if (k < 30) {
      o.maxLength = int(1, 24);
      if (rng.below(10) < 4) o.minLength = int(0, o.maxLength as number);
    } else if (k < 45) o.minLength = int(1, 16);
    else if (k < 70) {
      const a = int(1, 12);
      o.pattern = pick(PATTERNS)
        .replace('%a', String(a))
        .replace('%b', String(a + int(0, 12)));
    } else if (k < 85) o.format = pick(FORMATS);
    return o;
  }
  if (r < 0.82)
    return rng.below(2) === 0
      ? { type: 'integer' }
      : { type: 'integer', minimum: int(-1000, 0), maximum: int(1, 100000) };
  if (r < 0.86) return { type: 'number' };
  if (r < 0.9) return { type: 'boolean' };
  if (r < 0.97) return { enum: Array.from({ length: int(1, 20) }, (_, i) => `e${i}_${int(0, 1e6)}`) };
  return { const: `c${int(0, 1000)}` };
}

/** A schema piling one costly feature up, within the size and depth bounds (or past them: refused). */
export function adversarialSchema(rng: Rng): Schema {
  const int = (lo: number, hi: number) => lo + rng.below(hi - lo + 1);
  const pick = <T>(a: T[]) => a[rng.below(a.length)]!;
  const kinds: (() => Schema)[] = [
    () =>
      props(
        int(5, 60),
        (i) => ({
          type: 'string',
          pattern: `^${pick(['[a-z]', '\\w', '.', '[^x]', '[A-Z0-9]', '\\S'])}{${int(0, 4)},${int(4, 12)}}${i}$`,
        }),
        'p',
      ),
    () => ({
      type: 'object',
      propertyNames: { maxLength: int(2, 20) },
      additionalProperties: { type: 'string', maxLength: int(2, 20) },
    }),
    () => ({
      type: 'object',
      patternProperties: Object.fromEntries(
        Array.from({ length: int(1, 10) }, (_, i) => [`^[a-z]{${int(1, 10)}}${i}$`, { type: 'integer' }]),
      ),
    }),
    () => ({
      type: 'array',
      prefixItems: Array.from({ length: int(2, 30) }, () => ({ type: 'string', maxLength: int(1, 12) })),
    }),
    () => ({
      anyOf: Array.from({ length: int(2, 30) }, (_, i) => ({
        type: 'string',
        format: pick(['email', 'uri', 'ipv6', 'hostname', 'uri-reference', 'date-time', 'uuid']),
        description: `x${i}`,
      })),
    }),
    () =>
      props(
        int(20, 150),
        () => pick([{ type: 'integer' }, { type: 'string' }, { enum: ['a', 'b', 'c'] }, { type: 'boolean' }]),
        'k',
      ),
    () => ({ type: 'string', pattern: `^(${pick(['[a-z]', '.', '\\w'])}{${int(1, 6)}}-){${int(1, 8)}}$` }),
    () => ({
      type: 'array',
      items: { type: 'array', items: { type: 'string', minLength: int(1, 12) }, minItems: int(0, 50) },
      maxItems: int(1, 100),
    }),
    () => ({ enum: Array.from({ length: int(50, 400) }, (_, i) => `value ${i} ${'x'.repeat(int(0, 10))}`) }),
    () => {
      let s: Schema = { type: 'string', maxLength: int(1, 10) };
      for (let d = 0, n = int(3, 14); d < n; d++)
        s = pick([
          { type: 'array', items: s },
          { type: 'object', properties: { a: s, b: { type: 'integer' } }, required: ['a'] },
          { anyOf: [s, { type: 'null' }] },
        ]);
      return s;
    },
  ];
  return pick(kinds)();
}
