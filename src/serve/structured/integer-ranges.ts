// Bounds on integers, made right. XGrammar 0.1.27 converts many integer ranges wrongly: {"minimum": 0,
// "maximum": 120} lets 121..129 through ("1" [0-2] [0-9]), {"minimum": 7} lets 1..6 through, a negative
// minimum drops every negative number, {"maximum": -37} lets -99..-38 through. So each bounded integer
// subschema is checked before the schema is converted: its range is converted alone and the grammar,
// read as a regular expression, is tried on every integer near the bounds and near each power of ten in
// between (where the digit count changes, where the mistakes are). A range it gets right stays as it is;
// a wrong one of at most ENUM_MAX values becomes the enum of its values (the same set, which XGrammar
// compiles right); a wrong larger one is cut where the digit count changes ([7, inf) into the enum 7..9
// and [10, inf), which it gets right) into pieces that are enums or checked ranges, joined by anyOf; one
// that cannot be cut so ((-inf, -37]: XGrammar gets no unbounded negative range right) is refused with a
// 400 that says so.

/** Largest range (values) rewritten as an enum. */
export const ENUM_MAX = 1024;
/** Integers tried on each side of each bound and power of ten. */
const WINDOW = 120;

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

export class RangeRefused {
  constructor(readonly message: string) {}
}

/** The root rule's body in XGrammar's EBNF as a regular expression (literals, classes, groups,
 * alternatives and quantifiers: what XGrammar writes for integers); null for anything else. */
export function ebnfToRegExp(ebnf: string): RegExp | null {
  const line = ebnf.split('\n').find((l) => l.startsWith('root ::= '));
  if (!line) return null;
  const body = line.slice('root ::= '.length);
  let out = '';
  for (let i = 0; i < body.length;) {
    const c = body[i]!;
    if (c === ' ') i++;
    else if (c === '"') {
      let j = i + 1;
      while (j < body.length && body[j] !== '"') {
        if (body[j] === '\\') return null; // no escapes in integer grammars
        out += body[j]!.replace(/[.*+?^${}()|[\]\\-]/g, '\\$&');
        j++;
      }
      i = j + 1;
    } else if (c === '[') {
      const j = body.indexOf(']', i);
      if (j < 0 || body.slice(i, j).includes('\\')) return null;
      out += body.slice(i, j + 1);
      i = j + 1;
    } else if ('()|*+?{},0123456789'.includes(c)) {
      out += c;
      i++;
    } else return null; // a rule reference or other syntax
  }
  try {
    return new RegExp(`^(?:${out})$`);
  } catch {
    return null;
  }
}

/** Whether `re` accepts exactly the integers of [min, max] among those tried. */
function rangeIsRight(re: RegExp, min: number, max: number): boolean {
  const tried = new Set<number>();
  const around = (x: number) => {
    for (let v = x - WINDOW; v <= x + WINDOW; v++) tried.add(v);
  };
  for (const b of [min, max, 0]) if (Number.isFinite(b)) around(b);
  const lo = Number.isFinite(min) ? min : -1e7;
  const hi = Number.isFinite(max) ? max : 1e7;
  for (let p = 1; p <= 1e15; p *= 10) for (const x of [p, -p]) if (x >= lo - WINDOW && x <= hi + WINDOW) around(x);
  for (const v of tried) {
    if (!Number.isSafeInteger(v)) continue;
    if (re.test(String(v)) !== (v >= min && v <= max)) return false;
  }
  return true;
}

/** The inclusive integer bounds a subschema gives (minimum, exclusiveMinimum, ...), or null for none. */
function integerBounds(s: Record<string, unknown>): { min: number; max: number } | null {
  const num = (k: string) => (typeof s[k] === 'number' ? (s[k] as number) : null);
  const lows = [num('minimum'), num('exclusiveMinimum') === null ? null : Math.floor(num('exclusiveMinimum')!) + 1];
  const highs = [num('maximum'), num('exclusiveMaximum') === null ? null : Math.ceil(num('exclusiveMaximum')!) - 1];
  const lo = lows.filter((x): x is number => x !== null).map(Math.ceil);
  const hi = highs.filter((x): x is number => x !== null).map(Math.floor);
  if (lo.length === 0 && hi.length === 0) return null;
  return { min: lo.length ? Math.max(...lo) : -Infinity, max: hi.length ? Math.min(...hi) : Infinity };
}

const BOUND_KEYS = ['minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum'];
const CHILD_ONE = ['additionalProperties', 'items', 'propertyNames', 'unevaluatedProperties', 'unevaluatedItems'];
const CHILD_LIST = ['items', 'prefixItems', 'anyOf', 'oneOf', 'allOf'];
const CHILD_MAP = ['properties', 'patternProperties', '$defs', 'definitions'];

/** `schema` with each wrongly converted integer range replaced by the enum of its values; throws
 * RangeRefused for one too large for that. `convert` gives XGrammar's EBNF of a schema. */
export async function fixIntegerRanges(
  schema: Record<string, unknown>,
  convert: (schema: Record<string, unknown>) => Promise<string>,
): Promise<Record<string, unknown>> {
  const fix = async (s: unknown, at: string): Promise<unknown> => {
    if (!isObject(s)) return s;
    const out: Record<string, unknown> = { ...s };
    const sub = (key: string) => (at === '' ? key : `${at}.${key}`);
    for (const key of CHILD_ONE) if (isObject(s[key])) out[key] = await fix(s[key], sub(key));
    for (const key of CHILD_LIST)
      if (Array.isArray(s[key])) {
        const list: unknown[] = [];
        for (const [i, x] of (s[key] as unknown[]).entries()) list.push(await fix(x, sub(`${key}.${i}`)));
        out[key] = list;
      }
    for (const key of CHILD_MAP)
      if (isObject(s[key])) {
        const map: Record<string, unknown> = {};
        for (const [name, x] of Object.entries(s[key] as Record<string, unknown>))
          map[name] = await fix(x, sub(`${key}.${name}`));
        out[key] = map;
      }
    const types = Array.isArray(s.type) ? s.type : [s.type];
    // An enum or const decides the values whatever the bounds say.
    const bounds = types.includes('integer') && s.enum === undefined && s.const === undefined ? integerBounds(s) : null;
    if (bounds === null) return out;
    const { min, max } = bounds;
    if (min > max) return out; // XGrammar refuses it (a 400 from the conversion)
    const isRight = async (lo: number, hi: number) => {
      const range: Record<string, unknown> = { type: 'integer' };
      if (Number.isFinite(lo)) range.minimum = lo;
      if (Number.isFinite(hi)) range.maximum = hi;
      const re = ebnfToRegExp(await convert(range));
      return re !== null && rangeIsRight(re, lo, hi) ? range : null;
    };
    if (await isRight(min, max)) return out;
    const values: number[] = [];
    const ranges: Record<string, unknown>[] = [];
    for (const [lo, hi] of digitBands(min, max)) {
      if (hi - lo + 1 <= ENUM_MAX - values.length) {
        for (let v = lo; v <= hi; v++) values.push(v);
        continue;
      }
      const range = await isRight(lo, hi);
      if (range === null)
        throw new RangeRefused(
          `the grammar engine compiles the integer range [${Number.isFinite(min) ? min : '-inf'}, ` +
            `${Number.isFinite(max) ? max : 'inf'}] wrongly (at ${at === '' ? 'the top level' : at}); ` +
            `use bounds that are 0 or powers of ten, or a range of at most ${ENUM_MAX} values`,
        );
      ranges.push(range);
    }
    const nullable = types.includes('null');
    const alternatives: Record<string, unknown>[] = [
      ...(values.length > 0 || nullable ? [{ enum: [...values, ...(nullable ? [null] : [])] }] : []),
      ...ranges,
    ];
    for (const k of [...BOUND_KEYS, 'type']) delete out[k];
    if (alternatives.length === 1) Object.assign(out, alternatives[0]);
    else out.anyOf = alternatives;
    return out;
  };
  return (await fix(schema, '')) as Record<string, unknown>;
}

/** [min, max] cut where the number of digits changes (at 0, 1, 10, 100, ... and -1, -10, -100, ...); an
 * unbounded end is one piece from a bound XGrammar gets right: [7, inf) gives [7, 9] and [10, inf),
 * (-inf, 123] gives (-inf, 99] and [100, 123]. */
export function digitBands(min: number, max: number): [number, number][] {
  const head: [number, number][] = [];
  const tail: [number, number][] = [];
  let lo = min;
  let hi = max;
  if (max === Infinity) {
    let p = 1;
    while (p < min) p *= 10;
    tail.push([Math.max(p, min), Infinity]);
    hi = p - 1;
  }
  if (min === -Infinity) {
    let q = -1; // the largest of -1, 9, 99, ... not above max (for max < 0, a power of ten below it)
    if (max >= 0) for (let next = 9; next <= max; next = next * 10 + 9) q = next;
    else while (q > max) q *= 10;
    head.push([-Infinity, Math.min(q, max)]);
    lo = Math.min(q, max) + 1;
  }
  const middle: [number, number][] = [];
  if (lo <= hi) {
    const bands: [number, number][] = [[0, 0]];
    for (let p = 1; p <= 1e15; p *= 10) bands.push([p, p * 10 - 1], [-(p * 10 - 1), -p]);
    bands.sort((a, b) => a[0] - b[0]);
    for (const [a, b] of bands) if (Math.max(a, lo) <= Math.min(b, hi)) middle.push([Math.max(a, lo), Math.min(b, hi)]);
    if (middle.length === 0) middle.push([lo, hi]);
    middle[0]![0] = Math.min(middle[0]![0], lo);
    middle[middle.length - 1]![1] = Math.max(middle[middle.length - 1]![1], hi);
  }
  return [...head, ...middle, ...tail];
}
