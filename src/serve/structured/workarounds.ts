// Rewrites around XGrammar 0.1.27 bugs (the WebAssembly build has no later release), each checked by
// tests/serve/structured.test.ts:
//
// - Alternations of literals (what an enum becomes: root ::= ("\"a\"") | ("\"ab\"") | ...) compile to an
//   automaton that accepts strings outside them: the month names let "Februarrch" through, the integers
//   -120..-7 let -1000 through and lose -119. XGrammar merges the automaton's states by two rules whose
//   merges chain into wrong ones (mlc-ai/xgrammar#618, fixed upstream in #632). A prefix tree of the same
//   literals has no two edges with the same label out of one state, so no merge chains: every such rule
//   is rewritten as one (literalTries), the language unchanged.
// - A string with maxLength or minLength is written with the class [^"\\\r\n], which lets tabs and other
//   control characters through raw (invalid JSON): literalTries also narrows it to [^\0-\x1f"\\], the
//   class XGrammar's unbounded strings use.
// - A pattern is put inside the JSON string as it is: ".", [^...], \S, \W and \D then allow `"`, `\` and
//   control characters raw, which end or break the JSON text. They are narrowed to the characters a JSON
//   string holds unescaped (jsonSafePattern), so the output is still a match of the pattern; a pattern
//   that needs such a character (a literal `"`, `\\`, `\n`, or a class holding one) is refused.

/** The characters a JSON string needs escaped, as a regular-expression class body. */
const JSON_UNSAFE = '"\\\\\\u0000-\\u001f';

export class PatternRefused {
  constructor(readonly message: string) {}
}

/** `pattern` (a JavaScript regular expression) narrowed to characters JSON strings hold unescaped. */
export function jsonSafePattern(pattern: string): string {
  const refuse = (what: string): never => {
    throw new PatternRefused(
      `the pattern ${JSON.stringify(pattern)} ${what}, which a JSON string must escape; the grammar engine ` +
        'writes patterns unescaped, so such patterns are not supported',
    );
  };
  let out = '';
  let i = 0;
  while (i < pattern.length) {
    const c = pattern[i]!;
    if (c === '\\') {
      const e = pattern[i + 1];
      if (e === undefined) return pattern; // XGrammar reports the error
      if (e === 'S' || e === 'W' || e === 'D') out += `[^\\${e.toLowerCase()}${JSON_UNSAFE}]`;
      else if (e === 's') out += ' ';
      else if ('"\\nrtfbv0'.includes(e) || e === 'x' || e === 'u' || e === 'c') {
        // An escaped character: fine unless JSON escapes it.
        const m = /^\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4})/.exec(pattern.slice(i));
        if (m) {
          const cp = parseInt(m[1]!.slice(1), 16);
          if (cp < 0x20 || cp === 0x22 || cp === 0x5c) refuse(`holds the character ${m[0]}`);
          out += m[0];
          i += m[0].length;
          continue;
        }
        refuse(`holds ${c}${e}`);
      } else out += c + e;
      i += 2;
      continue;
    }
    if (c === '"') refuse('holds a quotation mark');
    if (c === '.') {
      out += `[^${JSON_UNSAFE}]`;
      i++;
      continue;
    }
    if (c === '[') {
      const { text, end } = safeClass(pattern, i, refuse);
      out += text;
      i = end;
      continue;
    }
    out += c;
    i++;
  }
  return out;
}

/** The class at pattern[start] ("[" ... "]") made JSON-safe: a negated class also excludes the unsafe
 * characters; a positive one loses them (refused if nothing is left). */
function safeClass(pattern: string, start: number, refuse: (what: string) => never): { text: string; end: number } {
  let i = start + 1;
  const negated = pattern[i] === '^';
  if (negated) i++;
  const bodyStart = i;
  const ranges: [number, number][] = [];
  let first = true;
  const unit = (): number => {
    // One class character at pattern[i] (moved past it): its code point.
    const c = pattern[i]!;
    if (c !== '\\') {
      const cp = pattern.codePointAt(i)!;
      i += cp > 0xffff ? 2 : 1;
      return cp;
    }
    const m = /^\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4})/.exec(pattern.slice(i));
    if (m) {
      i += m[0].length;
      return parseInt(m[1]!.slice(1), 16);
    }
    const e = pattern[i + 1] ?? '';
    i += 2;
    const simple: Record<string, number> = { n: 10, r: 13, t: 9, f: 12, v: 11, b: 8, '0': 0 };
    return simple[e] ?? e.codePointAt(0)!;
  };
  while (i < pattern.length && (pattern[i] !== ']' || first)) {
    first = false;
    const e = pattern[i] === '\\' ? pattern[i + 1] : undefined;
    if (e !== undefined && 'dwsDWS'.includes(e)) {
      if ('DWS'.includes(e)) refuse(`holds \\${e} inside a class`);
      if (e === 'd') ranges.push([48, 57]);
      if (e === 'w') ranges.push([48, 57], [65, 90], [97, 122], [95, 95]);
      if (e === 's') ranges.push([32, 32]);
      i += 2;
      continue;
    }
    const lo = unit();
    if (pattern[i] === '-' && pattern[i + 1] !== ']' && i + 1 < pattern.length) {
      i++;
      ranges.push([lo, unit()]);
    } else ranges.push([lo, lo]);
  }
  if (i >= pattern.length) return { text: pattern.slice(start), end: pattern.length }; // XGrammar reports it
  const end = i + 1;
  if (negated) return { text: `[^${pattern.slice(bodyStart, i)}${JSON_UNSAFE}]`, end };
  // Positive: the ranges without the unsafe characters.
  const safe: [number, number][] = [];
  for (const [lo, hi] of ranges)
    for (const [a, b] of [
      [Math.max(lo, 0x20), Math.min(hi, 0x21)],
      [Math.max(lo, 0x23), Math.min(hi, 0x5b)],
      [Math.max(lo, 0x5d), hi],
    ] as [number, number][])
      if (a <= b) safe.push([a, b]);
  if (safe.length === 0) refuse('has a class of characters that JSON strings escape only');
  const u = (cp: number) => (cp > 0xffff ? String.fromCodePoint(cp) : `\\u${cp.toString(16).padStart(4, '0')}`);
  return { text: `[${safe.map(([a, b]) => (a === b ? u(a) : `${u(a)}-${u(b)}`)).join('')}]`, end };
}

// ---- literal alternations -> prefix trees --------------------------------------------------------------

/** The characters of an EBNF literal's content, each as written (an escape stays one unit). */
function literalUnits(content: string): string[] {
  const units: string[] = [];
  for (let i = 0; i < content.length;) {
    if (content[i] === '\\') {
      const m = /^\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|.)/s.exec(content.slice(i))!;
      units.push(m[0]);
      i += m[0].length;
    } else {
      const cp = content.codePointAt(i)!;
      const n = cp > 0xffff ? 2 : 1;
      units.push(content.slice(i, i + n));
      i += n;
    }
  }
  return units;
}

/** The alternatives of a rule body when each is only literals ("a" "b" or ("a")), as unit lists; null
 * when the body is anything else or has fewer than two alternatives. */
function literalAlternatives(body: string): string[][] | null {
  const alts: string[][] = [[]];
  let depth = 0;
  let i = 0;
  let sawLiteral = false;
  while (i < body.length) {
    const c = body[i]!;
    if (c === ' ') i++;
    else if (c === '(') {
      depth++;
      i++;
    } else if (c === ')') {
      if (--depth < 0) return null;
      i++;
    } else if (c === '|') {
      if (depth !== 0) return null; // an alternation inside a group: not a flat list
      alts.push([]);
      i++;
    } else if (c === '"') {
      let j = i + 1;
      while (j < body.length && body[j] !== '"') j += body[j] === '\\' ? 2 : 1;
      if (j >= body.length) return null;
      alts[alts.length - 1]!.push(...literalUnits(body.slice(i + 1, j)));
      sawLiteral = true;
      i = j + 1;
    } else return null; // a class, a rule, a quantifier
  }
  return depth === 0 && sawLiteral && alts.length >= 2 ? alts : null;
}

/** EBNF for exactly the unit sequences `words`, as a prefix tree. */
function trieExpression(words: string[][]): string {
  const lit = (units: string[]) => `"${units.join('')}"`;
  const build = (all: string[][]): string => {
    const ws = [...new Map(all.map((w) => [w.join('\u0000'), w])).values()];
    const nullable = ws.some((w) => w.length === 0);
    const groups = new Map<string, string[][]>();
    for (const w of ws)
      if (w.length > 0) {
        const g = groups.get(w[0]!);
        if (g) g.push(w.slice(1));
        else groups.set(w[0]!, [w.slice(1)]);
      }
    const alts: string[] = [];
    for (const [first, rests] of groups) {
      // A run with one way on becomes one literal.
      const prefix = [first];
      let rest = rests;
      while (rest.length > 0 && rest.every((r) => r.length > 0 && r[0] === rest[0]![0])) {
        prefix.push(rest[0]![0]!);
        rest = rest.map((r) => r.slice(1));
      }
      alts.push(rest.length === 1 && rest[0]!.length === 0 ? lit(prefix) : `${lit(prefix)} ${build(rest)}`);
    }
    if (alts.length === 0) return '""';
    if (nullable) return `(${alts.join(' | ')})?`;
    return alts.length === 1 ? alts[0]! : `(${alts.join(' | ')})`;
  };
  return build(words);
}

/** The class XGrammar writes for the characters of a length-bounded string, and the one it means. */
const BOUNDED_STRING_CHAR = '[^"\\\\\\r\\n]';
const JSON_STRING_CHAR = '[^\\0-\\x1f"\\\\]';

/** `ebnf` with every rule that is an alternation of literals written as a prefix tree (same language),
 * and length-bounded strings' characters narrowed to those JSON allows unescaped. */
export function literalTries(ebnf: string): string {
  return ebnf
    .replaceAll(BOUNDED_STRING_CHAR, JSON_STRING_CHAR)
    .split('\n')
    .map((line) => {
      const at = line.indexOf(' ::= ');
      if (at < 0) return line;
      const alts = literalAlternatives(line.slice(at + 5));
      return alts ? `${line.slice(0, at)} ::= ${trieExpression(alts)}` : line;
    })
    .join('\n');
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const CHILD_ONE = ['additionalProperties', 'items', 'propertyNames', 'unevaluatedProperties', 'unevaluatedItems'];
const CHILD_LIST = ['items', 'prefixItems', 'anyOf', 'oneOf', 'allOf'];
const CHILD_MAP = ['properties', '$defs', 'definitions'];

/** `schema` with every pattern (and patternProperties' keys) made JSON-safe; throws PatternRefused. */
export function safePatterns(schema: unknown): unknown {
  if (!isObject(schema)) return schema;
  const out: Record<string, unknown> = { ...schema };
  if (typeof schema.pattern === 'string') out.pattern = jsonSafePattern(schema.pattern);
  for (const key of CHILD_ONE) if (isObject(schema[key])) out[key] = safePatterns(schema[key]);
  for (const key of CHILD_LIST) if (Array.isArray(schema[key])) out[key] = (schema[key] as unknown[]).map(safePatterns);
  for (const key of CHILD_MAP)
    if (isObject(schema[key]))
      out[key] = Object.fromEntries(
        Object.entries(schema[key] as Record<string, unknown>).map(([k, v]) => [k, safePatterns(v)]),
      );
  if (isObject(schema.patternProperties))
    out.patternProperties = Object.fromEntries(
      Object.entries(schema.patternProperties).map(([k, v]) => [jsonSafePattern(k), safePatterns(v)]),
    );
  return out;
}
