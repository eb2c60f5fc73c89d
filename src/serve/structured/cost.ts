// What compiling a grammar will cost, estimated before it runs. XGrammar's compilation is one synchronous
// WebAssembly call on the event loop (it cannot be interrupted, moved to a worker or shared with one: the
// compiled grammar lives in the instance's memory), so a request whose schema takes seconds to compile
// would stop every other request for that long. The estimate reads the grammar (XGrammar's EBNF) the way
// the compiler works through it: for each position of each rule (a character class or one character of a
// literal) it finds the tokens that can go on there, walking every token whose first character the
// position accepts as far as the grammar takes it. So a position costs about the tokens starting with an
// accepted character; a class in a bounded repetition x{m,n} costs how far the tokens run inside it (all
// of a token, for a string's characters) times about n^1.3 (it is unrolled, and its optional copies make
// the walk branch); * and + loops are one position; and the grammar's length counts. The weights are an
// upper envelope of measured compile times (bench/structured.ts --calibrate): on the LLaMA-2 32000-token
// vocabulary a string's maxLength 8 costs about 45 ms, 16 about 140 ms, 64 about 0.8 s, and 256 or more
// about 2.5 s (XGrammar compresses longer repetitions); unbounded strings, enums, formats and objects of a
// hundred properties cost tens of ms.

/** Longest run of a token's characters followed through one class (tokens are rarely longer). */
const RUN_CAP = 16;
/** Classes whose runs one estimate computes (a few ms each on 32k tokens); past them a class counts as
 * wide as the widest (every character of every token). */
const NEW_CLASSES_PER_ESTIMATE = 24;

/** What the estimate needs of a vocabulary: each token's first characters (Unicode code points of the
 * text it decodes to), and per character class how many tokens start in it and how far they run in it. */
export class VocabularyStats {
  /** Distinct first code points, ascending, and how many tokens start with each. */
  private readonly points: Uint32Array;
  private readonly counts: Uint32Array;
  /** The first RUN_CAP code points of each token, token after token (ends[i] closes token i). */
  private readonly chars: Uint32Array;
  private readonly ends: Uint32Array;
  /** Tokens with text. */
  readonly tokens: number;
  /** The sum of the tokens' lengths (up to RUN_CAP each): the run of a class that takes every character. */
  readonly widestRun: number;
  private readonly firsts = new Map<string, number>();
  private readonly runs = new Map<string, number>();
  /** New classes whose runs were computed in the current estimate. */
  computed = 0;

  constructor(tokens: (Uint8Array | null)[]) {
    const byPoint = new Map<number, number>();
    const chars: number[] = [];
    const ends: number[] = [];
    for (const bytes of tokens) {
      if (bytes === null || bytes.length === 0) continue;
      const cps = codePoints(bytes, RUN_CAP);
      byPoint.set(cps[0]!, (byPoint.get(cps[0]!) ?? 0) + 1);
      for (const cp of cps) chars.push(cp);
      ends.push(chars.length);
    }
    const points = [...byPoint.keys()].sort((a, b) => a - b);
    this.points = Uint32Array.from(points);
    this.counts = Uint32Array.from(points.map((p) => byPoint.get(p)!));
    this.chars = Uint32Array.from(chars);
    this.ends = Uint32Array.from(ends);
    this.tokens = ends.length;
    this.widestRun = chars.length;
  }

  /** Tokens whose first character the class (its EBNF text `key`) accepts. */
  first(key: string): number {
    const hit = this.firsts.get(key);
    if (hit !== undefined) return hit;
    const { ranges, negated } = parseClass(key);
    let n = 0;
    for (const [lo, hi] of ranges) {
      let i = lowerBound(this.points, lo);
      while (i < this.points.length && this.points[i]! <= hi) n += this.counts[i++]!;
    }
    // Ranges may overlap ([a-zA-Za-z]): never count more than there are.
    n = Math.min(n, this.tokens);
    const out = negated ? this.tokens - n : n;
    this.firsts.set(key, out);
    return out;
  }

  /** Tokens whose first character is `cp`. */
  firstOf(cp: number): number {
    const i = lowerBound(this.points, cp);
    return this.points[i] === cp ? this.counts[i]! : 0;
  }

  /** The sum over tokens of how many of their first characters in a row the class accepts. */
  run(key: string): number {
    const hit = this.runs.get(key);
    if (hit !== undefined) return hit;
    if (this.computed >= NEW_CLASSES_PER_ESTIMATE) return this.widestRun;
    this.computed++;
    const { ranges, negated } = parseClass(key);
    const inRanges = (c: number) => ranges.some(([lo, hi]) => c >= lo && c <= hi) !== negated;
    const ascii = new Uint8Array(128);
    for (let c = 0; c < 128; c++) ascii[c] = inRanges(c) ? 1 : 0;
    let total = 0;
    let start = 0;
    for (let t = 0; t < this.tokens; t++) {
      const end = this.ends[t]!;
      let i = start;
      while (i < end) {
        const c = this.chars[i]!;
        if (c < 128 ? ascii[c] === 0 : !inRanges(c)) break;
        i++;
      }
      total += i - start;
      start = end;
    }
    this.runs.set(key, total);
    return total;
  }
}

function lowerBound(a: Uint32Array, x: number): number {
  let lo = 0;
  let hi = a.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (a[mid]! < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Up to `max` code points of UTF-8 bytes; a byte that starts no valid character counts as U+0080 (some
 * non-ASCII character: byte-fallback tokens and pieces of characters). */
function codePoints(b: Uint8Array, max: number): number[] {
  const out: number[] = [];
  let i = 0;
  while (i < b.length && out.length < max) {
    const b0 = b[i]!;
    if (b0 < 0x80) {
      out.push(b0);
      i++;
      continue;
    }
    const need = b0 >= 0xf0 ? 3 : b0 >= 0xe0 ? 2 : b0 >= 0xc0 ? 1 : -1;
    let cp = need < 0 || i + need >= b.length ? -1 : b0 & (0x3f >> need);
    for (let k = 1; k <= need && cp >= 0; k++) {
      const c = b[i + k]!;
      cp = (c & 0xc0) === 0x80 ? (cp << 6) | (c & 0x3f) : -1;
    }
    if (cp < 0) {
      out.push(0x80);
      i++;
    } else {
      out.push(cp);
      i += need + 1;
    }
  }
  return out;
}

// ---- the estimate ----------------------------------------------------------------------------------

/** What a grammar holds, in tokens walked: each position counts the tokens whose first character it
 * accepts, times the copies a repetition makes of it. */
export interface GrammarFeatures {
  /** Characters of EBNF text (parsing, rules and states of every kind). */
  chars: number;
  /** Characters of literals ("name": few tokens go on past their first character). */
  literal: number;
  /** Character classes on their own or optional ([a-z], [^"]?). */
  single: number;
  /** Classes in * and + loops (one position each, walked as far as tokens stay in the class). */
  loop: number;
  /** Classes in bounded repetitions, x{n} x{m,n} x{m,}, or inside a repeated group: unrolled, and their
   * optional copies make the walk branch. */
  repeated: number;
  /** Literals' characters inside repeated groups ((", " item){0,9}). */
  repeatedLiteral: number;
}

/** Milliseconds per unit of each feature: the least upper envelope (a linear program) of the CPU times
 * of 455 compilations (bench/structured.ts --calibrate: each feature alone, random and piled-up schemas;
 * the least of 12 measurements each, on the LLaMA-2 32000 and stories260K 512-token vocabularies, AMD EPYC
 * Zen 3), plus 10%: the estimate is above every one of them. */
export const MS_PER: Readonly<Record<keyof GrammarFeatures, number>> = {
  chars: 0.0088,
  literal: 0.000001,
  single: 0.00041,
  loop: 0.000067,
  repeated: 0.0000275,
  repeatedLiteral: 0.000005,
};
/** Repetition counts beyond this cost no more (XGrammar compresses long repetitions). */
const REPEAT_CAP = 256;
/** Growth of a bounded repetition's cost with its upper bound n: n^REPEAT_EXPONENT. */
const REPEAT_EXPONENT = 1.3;

/** Copies a repetition makes: x{m,n} about n^1.3, x{n} half that (no optional copies to branch on),
 * x{m,} twice (m+1)^1.3. */
export function repeatUnits(min: number, max: number | null): number {
  if (max === null) return 2 * Math.min(min + 1, REPEAT_CAP) ** REPEAT_EXPONENT;
  const units = Math.min(max, REPEAT_CAP) ** REPEAT_EXPONENT;
  return Math.max(1, min === max ? units / 2 : units);
}

/** The features of a grammar in XGrammar's EBNF, for the vocabulary described by `stats`. */
export function grammarFeatures(ebnf: string, stats: VocabularyStats): GrammarFeatures {
  const f: GrammarFeatures = { chars: ebnf.length, literal: 0, single: 0, loop: 0, repeated: 0, repeatedLiteral: 0 };
  stats.computed = 0;
  for (const line of ebnf.split('\n')) {
    const at = line.indexOf(' ::= ');
    if (at >= 0) new RuleCost(line.slice(at + 5), stats, f).run();
  }
  return f;
}

/** Estimated milliseconds XGrammar takes to compile `ebnf` for the vocabulary described by `stats`. */
export function estimateCompile(ebnf: string, stats: VocabularyStats): number {
  const f = grammarFeatures(ebnf, stats);
  let ms = 0;
  for (const k of Object.keys(MS_PER) as (keyof GrammarFeatures)[]) ms += f[k] * MS_PER[k];
  return ms;
}

type Quantifier = { kind: 'none' | 'optional' | 'loop' | 'repeat'; units: number };

/** One rule body, walked by recursive descent over XGrammar's EBNF syntax (literals "...", classes [...],
 * rule names, groups (...), lookaheads (= ...), |, and the quantifiers * + ? {m} {m,} {m,n}), its
 * positions added to the features. A rule reference adds nothing (the rule is counted where it is
 * defined); text it does not recognise counts as a repeated position of every token (conservative). */
class RuleCost {
  private i = 0;

  constructor(
    private readonly s: string,
    private readonly stats: VocabularyStats,
    private readonly f: GrammarFeatures,
  ) {}

  run(): void {
    while (this.i < this.s.length) this.sequence(1);
  }

  /** Elements up to a closing parenthesis (consumed) or the end. */
  private sequence(mult: number): void {
    while (this.i < this.s.length) {
      const c = this.s[this.i]!;
      if (c === ' ' || c === '\t' || c === '|') {
        this.i++;
        continue;
      }
      if (c === ')') {
        this.i++;
        return;
      }
      this.element(mult);
    }
  }

  /** Adds a literal's character. */
  private literalChar(cp: number, mult: number, q: Quantifier): void {
    const tokens = this.stats.firstOf(cp);
    if (q.kind === 'repeat' || mult > 1) this.f.repeatedLiteral += tokens * mult * q.units;
    else this.f.literal += tokens;
  }

  /** Adds a class: its tokens' runs through it where it repeats, the tokens it starts otherwise. */
  private characterClass(key: string, mult: number, q: Quantifier): void {
    const f = this.f;
    if (q.kind === 'repeat' || mult > 1) f.repeated += this.stats.run(key) * mult * q.units;
    else if (q.kind === 'loop') f.loop += this.stats.run(key);
    else f.single += this.stats.first(key);
  }

  private element(mult: number): void {
    const s = this.s;
    const c = s[this.i]!;
    if (c === '(') {
      this.i++;
      if (s[this.i] === '=') {
        // A lookahead: checked against few tokens, never expanded.
        const saved = { ...this.f };
        this.i++;
        this.sequence(1);
        Object.assign(this.f, saved);
        return;
      }
      // The group's repetition (after its closing parenthesis) multiplies what is inside.
      const start = this.i;
      this.skipGroup();
      const q = this.quantifier();
      const end = this.i;
      this.i = start;
      this.sequence(q.kind === 'repeat' ? mult * q.units : mult);
      this.i = end;
      return;
    }
    if (c === '"') {
      const chars = this.literal();
      const q = this.quantifier();
      for (const cp of chars) this.literalChar(cp, mult, q);
      return;
    }
    if (c === '[') {
      const key = this.classText();
      this.characterClass(key, mult, this.quantifier());
      return;
    }
    const name = /^[A-Za-z_][A-Za-z0-9_.-]*/.exec(s.slice(this.i, this.i + 200));
    if (name) {
      this.i += name[0].length;
      this.quantifier();
      return;
    }
    this.i++;
    this.f.repeated += this.stats.widestRun * mult;
  }

  /** Moves past the group that starts at this.i (just after its "("), nested groups, literals and classes. */
  private skipGroup(): void {
    let depth = 1;
    while (this.i < this.s.length && depth > 0) {
      const c = this.s[this.i]!;
      if (c === '"') this.literal();
      else if (c === '[') this.classText();
      else {
        if (c === '(') depth++;
        else if (c === ')') depth--;
        this.i++;
      }
    }
  }

  /** The code points of the literal at this.i (moved past its closing quote). */
  private literal(): number[] {
    const s = this.s;
    this.i++;
    const out: number[] = [];
    while (this.i < s.length && s[this.i] !== '"') {
      const [cp, next] = readChar(s, this.i);
      out.push(cp);
      this.i = next;
    }
    this.i++;
    return out;
  }

  /** The text of the class at this.i, brackets included (moved past it). */
  private classText(): string {
    const s = this.s;
    const start = this.i;
    this.i++;
    while (this.i < s.length && s[this.i] !== ']') this.i = readChar(s, this.i)[1];
    this.i++;
    return s.slice(start, this.i);
  }

  /** The quantifier at this.i, if any (moved past it). */
  private quantifier(): Quantifier {
    const s = this.s;
    const c = s[this.i];
    if (c === '*' || c === '+') {
      this.i++;
      return { kind: 'loop', units: 1 };
    }
    if (c === '?') {
      this.i++;
      return { kind: 'optional', units: 1 };
    }
    if (c !== '{') return { kind: 'none', units: 1 };
    const m = /^\{\s*(\d+)\s*(,\s*(\d*)\s*)?\}/.exec(s.slice(this.i, this.i + 40));
    if (!m) return { kind: 'none', units: 1 };
    this.i += m[0].length;
    const min = Number(m[1]);
    const max = m[2] === undefined ? min : m[3] === '' ? null : Number(m[3]);
    return { kind: 'repeat', units: repeatUnits(min, max) };
  }
}

/** One possibly escaped character of a literal or class at s[i]: its code point and the next index. */
function readChar(s: string, i: number): [number, number] {
  if (s[i] !== '\\') {
    const cp = s.codePointAt(i)!;
    return [cp, i + (cp > 0xffff ? 2 : 1)];
  }
  const e = s[i + 1];
  const hex = (n: number): [number, number] => {
    const v = parseInt(s.slice(i + 2, i + 2 + n), 16);
    return [Number.isNaN(v) ? 0 : v, i + 2 + n];
  };
  if (e === 'x') return hex(2);
  if (e === 'u') return hex(4);
  if (e === 'U') return hex(8);
  const simple: Record<string, number> = { n: 10, r: 13, t: 9, '0': 0, b: 8, f: 12, v: 11 };
  if (e !== undefined && simple[e] !== undefined) return [simple[e], i + 2];
  const cp = s.codePointAt(i + 1) ?? 0x5c;
  return [cp, i + 1 + (cp > 0xffff ? 2 : 1)];
}

/** A class's ranges ([lo, hi], code points) and whether it is negated, from its text "[...]". */
export function parseClass(text: string): { ranges: [number, number][]; negated: boolean } {
  let i = 1;
  const end = text.length - 1;
  const negated = text[i] === '^';
  if (negated) i++;
  const ranges: [number, number][] = [];
  while (i < end) {
    const [lo, next] = readChar(text, i);
    i = next;
    if (text[i] === '-' && i + 1 < end) {
      const [hi, after] = readChar(text, i + 1);
      i = after;
      ranges.push([Math.min(lo, hi), Math.max(lo, hi)]);
    } else ranges.push([lo, lo]);
  }
  return { ranges, negated };
}
