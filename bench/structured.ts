// Structured output's cost per decode step: the allowed-token bitmask (XGrammar, WebAssembly), masking
// the row's logits and accepting the token, on the LLaMA-2 32k and the stories260K 512-token
// vocabularies, over constrained random walks (random logits with a bias towards closing strings, as in
// test/serve/structured.test.ts, and without it: long free strings); also the one-time costs: building the vocabulary and compiling a schema.
//   node dist/bench/structured.js
import os from 'node:os';
import path from 'node:path';
import {
  compileResponseFormat,
  maskLogits,
  releaseGrammarVocabularies,
  tokenBytes,
} from '../src/serve/structured/index.js';
import { TextTokenizer } from '../src/tokenizer/tokenizer.js';
import { packageRoot } from '../src/util/package.js';
import { Rng } from '../src/util/random.js';

const ROOT = packageRoot();
const STEPS = Number(process.env.BENCH_STRUCTURED_STEPS ?? 3000);

const SCHEMA = {
  type: 'object',
  properties: {
    name: { type: 'string', maxLength: 40 },
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
  t = performance.now();
  await compileResponseFormat(
    { type: 'json_schema', json_schema: { name: 'long', schema: { type: 'string', maxLength: 100000 } } },
    tokenizer,
    { vocabSize },
  );
  const longMs = performance.now() - t;

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
    `| ${name} | one-time | vocabulary + json_object ${buildMs.toFixed(0)} ms; schema compile ${compileMs.toFixed(0)} ms; ` +
      `string maxLength 100000: ${longMs.toFixed(0)} ms | | | | | | |`,
  );
}

console.log(
  `${os.cpus()[0]?.model ?? 'cpu'}, Node ${process.version}; ${STEPS} steps per row, greedy over masked logits`,
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
