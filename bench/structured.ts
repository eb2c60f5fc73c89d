// Structured output's cost per decode step: the allowed-token bitmask (XGrammar, WebAssembly), masking
// the row's logits and accepting the token, on the LLaMA-2 32k and the stories260K 512-token
// vocabularies, over constrained random walks (random logits with a bias towards closing strings, as in
// test/serve/structured.test.ts, and without it: long free strings); also the one-time costs: building the vocabulary and compiling a schema.
//   node dist/bench/structured.js
//   node dist/bench/structured.js --calibrate   what compiling a schema costs against the estimate that
//       bounds it (src/serve/structured/cost.ts): the features one by one and a random corpus
//       (bench/structured-corpus.ts), CPU time of the compilation (min of BENCH_STRUCTURED_PASSES, default
//       3), on both vocabularies; prints Markdown
import os from 'node:os';
import path from 'node:path';
import {
  COMPILE_BUDGET_MS,
  compileResponseFormat,
  estimateCompile,
  formatGrammar,
  grammarVocabulary,
  maskLogits,
  maxStringLength,
  releaseGrammarVocabularies,
  tokenBytes,
} from '../src/serve/structured/index.js';
import { adversarialSchema, featureSchemas, randomSchema } from './structured-corpus.js';
import { TextTokenizer } from '../src/tokenizer/tokenizer.js';
import { packageRoot } from '../src/util/package.js';
import { Rng } from '../src/util/random.js';

const ROOT = packageRoot();
const STEPS = Number(process.env.BENCH_STRUCTURED_STEPS ?? 3000);

const SCHEMA = {
  type: 'object',
  properties: {
    name: { type: 'string', maxLength: 10 },
    age: { type: 'integer', minimum: 0, maximum: 150 },
    role: { enum: ['admin', 'user', 'guest'] },
    tags: { type: 'array', items: { type: 'string' }, maxItems: 5 },
    scores: { type: 'array', items: { type: 'number' } },
    address: {
      type: 'object',
      properties: { city: { type: 'string' }, zip: { type: 'string', pattern: '^[0-9]{5}$' } },
      required: ['city', 'zip'],
    },
  },
  required: ['name', 'age', 'role', 'address'],
};

const percentile = (xs: number[], q: number) => [...xs].sort((a, b) => a - b)[Math.floor(q * (xs.length - 1))]!;

async function measure(name: string, tokenizer: TextTokenizer, vocabSize: number): Promise<void> {
  let t = performance.now();
  const first = await compileResponseFormat({ type: 'json_object' }, tokenizer, { vocabSize });
  const buildMs = performance.now() - t;
  t = performance.now();
  const schema = await compileResponseFormat(
    { type: 'json_schema', json_schema: { name: 's', schema: SCHEMA } },
    tokenizer,
    {
      vocabSize,
    },
  );
  const compileMs = performance.now() - t;

  const bias = new Float32Array(vocabSize);
  tokenBytes(tokenizer, vocabSize).forEach((b, id) => {
    const text = b ? Buffer.from(b).toString('latin1') : '';
    bias[id] = text.includes('"') ? 6 : /[}\]]/.test(text) ? 1.5 : 0;
  });
  const none = new Float32Array(vocabSize);
  for (const [label, grammar, b] of [
    ['json_object', first!, bias],
    ['json_schema', schema!, bias],
    ['json_object, no bias (long strings)', first!, none],
  ] as const) {
    const maskMs: number[] = [];
    const applyMs: number[] = [];
    const acceptMs: number[] = [];
    const rng = new Rng(7);
    const logits = new Float32Array(vocabSize);
    let walks = 0;
    while (maskMs.length < STEPS) {
      const c = grammar.createConstraint();
      walks++;
      for (let n = 0; n < 300 && !c.finished && maskMs.length < STEPS; n++) {
        for (let i = 0; i < vocabSize; i++) logits[i] = (rng.next() / 2 ** 32) * 4 + b[i]!;
        let t0 = performance.now();
        const mask = c.allowedMask();
        maskMs.push(performance.now() - t0);
        t0 = performance.now();
        maskLogits(logits, mask);
        applyMs.push(performance.now() - t0);
        let best = 0;
        for (let i = 1; i < vocabSize; i++) if (logits[i]! > logits[best]!) best = i;
        t0 = performance.now();
        c.accept(best);
        acceptMs.push(performance.now() - t0);
      }
      c.dispose();
    }
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    const total = maskMs.map((m, i) => m + applyMs[i]! + acceptMs[i]!);
    console.log(
      `| ${name} | ${label} | ${mean(maskMs).toFixed(3)} | ${mean(applyMs).toFixed(3)} | ${mean(acceptMs).toFixed(3)} | ` +
        `${mean(total).toFixed(3)} | ${percentile(total, 0.5).toFixed(3)} | ${percentile(total, 0.99).toFixed(3)} | ${walks} |`,
    );
  }
  console.log(
    `| ${name} | one-time | vocabulary + json_object ${buildMs.toFixed(0)} ms; the schema ${compileMs.toFixed(0)} ms | | | | | | |`,
  );
}

/** CPU milliseconds of `f` (the compilation runs on this thread alone: other processes' load counts less
 * than in wall time). */
function cpuMs(f: () => void): number {
  const t0 = process.cpuUsage();
  f();
  const d = process.cpuUsage(t0);
  return (d.user + d.system) / 1000;
}

interface Measured {
  name: string;
  estimate: number;
  ms: number;
}

/** Each schema's estimated and measured compilation (schemas the checks refuse, or estimated past 3 s,
 * are left out; the measured time is the least of `passes`). */
async function compileCosts(
  tokenizer: TextTokenizer,
  vocabSize: number,
  schemas: [string, Record<string, unknown>][],
  passes: number,
): Promise<Measured[]> {
  const vocabulary = await grammarVocabulary(tokenizer, { vocabSize, cacheSize: 1 });
  const out: Measured[] = [];
  for (const [name, schema] of schemas) {
    let grammar;
    try {
      grammar = await formatGrammar({
        type: 'json_schema',
        json_schema: { name: 'c', schema, strict: null, description: null },
      });
    } catch {
      continue;
    }
    const estimate = estimateCompile(grammar.ebnf, vocabulary.stats);
    if (estimate > 3000) continue;
    let ms = Infinity;
    for (let p = 0; p < (estimate > 500 ? 1 : passes); p++)
      ms = Math.min(
        ms,
        cpuMs(() => vocabulary.compileUncached(grammar.ebnf, grammar.root)),
      );
    out.push({ name, estimate, ms });
  }
  return out;
}

async function calibrate(): Promise<void> {
  const passes = Number(process.env.BENCH_STRUCTURED_PASSES ?? 3);
  const rng = new Rng(Number(process.env.BENCH_STRUCTURED_SEED ?? 3));
  const corpus: [string, Record<string, unknown>][] = [
    ...Object.entries(featureSchemas()),
    ...Array.from({ length: 150 }, (_, i): [string, Record<string, unknown>] => [`random ${i}`, randomSchema(rng)]),
    ...Array.from({ length: 100 }, (_, i): [string, Record<string, unknown>] => [
      `piled up ${i}`,
      adversarialSchema(rng),
    ]),
  ];
  const features = new Set(Object.keys(featureSchemas()));
  const loadBefore = os.loadavg();
  const vocabularies: [string, TextTokenizer, number][] = [
    [
      'llama2 32000',
      TextTokenizer.fromSentencePiece(path.join(ROOT, 'test', 'fixtures', 'llama2-tokenizer', 'tokenizer.model')),
      32000,
    ],
    [
      'stories260K 512',
      TextTokenizer.fromLlama2c(path.join(ROOT, 'assets', 'models', 'stories260K', 'tok512.bin'), 512),
      512,
    ],
  ];
  const results = new Map<string, Measured[]>();
  const bounds = new Map<string, number>();
  for (const [name, tokenizer, vocabSize] of vocabularies) {
    results.set(name, await compileCosts(tokenizer, vocabSize, corpus, passes));
    bounds.set(name, await maxStringLength(await grammarVocabulary(tokenizer, { vocabSize, cacheSize: 1 })));
  }
  const loadAfter = os.loadavg();
  const f = (x: number) => (x < 10 ? x.toFixed(1) : x.toFixed(0));
  const lines: string[] = [];
  lines.push(
    `${os.cpus()[0]?.model ?? 'cpu'}, Node ${process.version}; CPU time of one compilation (least of ${passes}); ` +
      `load average ${loadBefore.map((x) => x.toFixed(1)).join(', ')} before, ${loadAfter.map((x) => x.toFixed(1)).join(', ')} after.`,
    '',
    `| schema | llama2 32000: estimate ms | compile ms | stories260K 512: estimate ms | compile ms |`,
    '|---|---:|---:|---:|---:|',
  );
  const big = results.get('llama2 32000')!;
  const small = results.get('stories260K 512')!;
  // The table shows a selection (every feature is measured and counts in the summary below it).
  const shown = (name: string) =>
    features.has(name) &&
    (!name.startsWith('pattern ') || /^pattern (any|\[a-z\]|\[0-9\])(\{0,16\}|\*)$/.test(name)) &&
    !name.startsWith('minLength = maxLength') &&
    !/^(max|min)Length (1|2|24)$/.test(name);
  for (const m of big.filter((r) => shown(r.name))) {
    const s = small.find((r) => r.name === m.name);
    lines.push(`| ${m.name} | ${f(m.estimate)} | ${f(m.ms)} | ${s ? f(s.estimate) : ''} | ${s ? f(s.ms) : ''} |`);
  }
  lines.push('');
  for (const [name, rows] of results) {
    const within = rows.filter((r) => r.estimate <= COMPILE_BUDGET_MS);
    const refused = rows.filter((r) => r.estimate > COMPILE_BUDGET_MS);
    const under = rows.filter((r) => r.ms > r.estimate);
    const worst = [...rows].sort((a, b) => b.ms / b.estimate - a.ms / a.estimate)[0]!;
    lines.push(
      `${name}: ${rows.length} schemas compiled; the estimate was below the compilation for ${under.length} ` +
        `(at worst ${(worst.ms / worst.estimate).toFixed(2)}×, ${worst.name}); ${within.length} within the ${COMPILE_BUDGET_MS} ms ` +
        `budget compiled in at most ${f(Math.max(0, ...within.map((r) => r.ms)))} ms; ${refused.length} refused, of which ` +
        `${refused.filter((r) => r.ms < COMPILE_BUDGET_MS / 2).length} compiled in under ${COMPILE_BUDGET_MS / 2} ms; ` +
        `maxLength alone up to ${bounds.get(name)}.`,
    );
  }
  console.log(lines.join('\n'));
  await releaseGrammarVocabularies();
}

if (process.argv.includes('--calibrate')) {
  await calibrate();
  process.exit(0);
}

console.log(
  `${os.cpus()[0]?.model ?? 'cpu'}, Node ${process.version}; ${STEPS} steps per row, greedy over masked logits\n`,
);
console.log('| vocabulary | format | mask ms | maskLogits ms | accept ms | total ms/token | median | p99 | walks |');
console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- |');
await measure(
  'llama2 32000',
  TextTokenizer.fromSentencePiece(path.join(ROOT, 'test', 'fixtures', 'llama2-tokenizer', 'tokenizer.model')),
  32000,
);
await measure(
  'stories260K 512',
  TextTokenizer.fromLlama2c(path.join(ROOT, 'assets', 'models', 'stories260K', 'tok512.bin'), 512),
  512,
);
await releaseGrammarVocabularies();
