// Serving throughput and latency of `mixlora serve` (continuous batching) on the bench preset model
// (llama-58m: vocab 32000, hidden 512, 8 layers, random weights, float32) with the four adapters of the
// paper's settings (LoRA r 80, DoRA r 80, MixLoRA and MixDoRA r 16 × 8 experts, top-2) and the base
// model, mixed. For 1, 4, 8 and 16 clients, each client streams its requests one after another
// (a 32-token prompt, 64 new tokens, greedy); reported: aggregate generated tokens/s, p50/p99 time
// to first token and per output token as the clients see them. Target (issue 14): 8 concurrent
// clients >= 4x the tokens/s of the same requests sent one at a time.
//   node --single-threaded-gc dist/bench/serve.js           prints the Markdown section (the flag: as
//                                                            bin/mixlora runs, src/util/node-flags.ts)
//   node --single-threaded-gc dist/bench/serve.js --write   also puts it into BENCHMARKS.md (replacing
//                                                            its "## Serving")
//   node --single-threaded-gc dist/bench/serve.js --json    prints the results per client count as one JSON
//                                                            line instead of the section
//   BENCH_SERVE_REQUESTS=N                requests per client (default 3; one client sends one per model)
//   BENCH_SERVE_CLIENTS=1,8               client counts (default 1,4,8,16)
//   BENCH_SERVE_TOKENS=N                  new tokens per request (default 64)
//   BENCH_SERVE_METHODS=lora,mixlora      adapters served (default all four)
//   BENCH_SERVE_ROUNDS=N                  rounds over all client counts (default 5): each count's median
//                                         round is reported, and the ratio to one client per round, since
//                                         a shared machine's speed drifts by tens of percent within minutes
//   --structured                          instead: the same requests with response_format json_object and
//                                         json_schema beside none, for 1 and 8 clients (BENCH_SERVE_CLIENTS),
//                                         3 rounds (BENCH_SERVE_ROUNDS), the formats interleaved in each round;
//                                         prints (--write: puts into BENCHMARKS.md) "## Structured output"
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as T from '../src/tensor/index.js';
import { llamaConfig, randomModel } from '../src/models/random.js';
import { Adapter } from '../src/adapters/adapter.js';
import { parseAdapterConfig } from '../src/adapters/config.js';
import { saveAdapter } from '../src/adapters/io.js';
import { METHODS, PRESETS, methodConfig } from '../src/bench/benchmark.js';
import { TextTokenizer } from '../src/tokenizer/tokenizer.js';
import { createServer } from '../src/serve/server.js';
import { compileResponseFormat, releaseGrammarVocabularies } from '../src/serve/structured/index.js';
import { NODE_FLAGS } from '../src/util/node-flags.js';
import { packageRoot } from '../src/util/package.js';
import { fmt, machine, writeBenchmarksSection } from './harness.js';

const PRESET = PRESETS['llama-58m'];
const PROMPT_TOKENS = 32;
const NEW_TOKENS = Number(process.env.BENCH_SERVE_TOKENS ?? 64);
const CLIENTS = (process.env.BENCH_SERVE_CLIENTS ?? '1,4,8,16').split(',').map(Number);
const SERVED = (process.env.BENCH_SERVE_METHODS?.split(',') ?? [...METHODS]) as (typeof METHODS)[number][];
const PER_CLIENT = Number(process.env.BENCH_SERVE_REQUESTS ?? 3);
const ROUNDS = Number(process.env.BENCH_SERVE_ROUNDS ?? 5);
const TARGET = 4;
for (const m of SERVED)
  if (!(METHODS as readonly string[]).includes(m)) throw new Error(`BENCH_SERVE_METHODS: unknown '${m}'`);

interface LevelRun {
  clients: number;
  requests: number;
  tokens: number;
  seconds: number;
  ttft: number[];
  tpot: number[];
}

interface LevelResult {
  clients: number;
  /** Per round: this count's tokens/s over one client's in the same round. */
  ratios: number[];
  requests: number;
  tokens: number;
  tokensPerS: number;
  ttftP50: number;
  ttftP99: number;
  tpotP50: number;
  tpotP99: number;
}

function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))]!;
}

/** One streamed request: time to the first token, the mean time per later token, tokens generated. */
async function timedRequest(url: string, model: string, prompt: number[], responseFormat: unknown = undefined) {
  const t0 = performance.now();
  const res = await fetch(`${url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      model,
      prompt,
      max_tokens: NEW_TOKENS,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
      response_format: responseFormat,
    }),
  });
  if (!res.ok) throw new Error(`${model}: HTTP ${res.status} ${await res.text()}`);
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  let first = 0;
  let body = '';
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    if (first === 0) first = performance.now();
    body += decoder.decode(value, { stream: true });
  }
  const end = performance.now();
  const usage = /"completion_tokens":(\d+)/.exec(body);
  const tokens = usage ? Number(usage[1]) : 0;
  return { ttft: (first - t0) / 1000, tpot: tokens > 1 ? (end - first) / 1000 / (tokens - 1) : 0, tokens };
}

async function level(
  url: string,
  models: string[],
  clients: number,
  responseFormat: unknown = undefined,
): Promise<LevelRun> {
  const ttft: number[] = [];
  const tpot: number[] = [];
  let tokens = 0;
  let k = 0;
  // At least one request per model, so that one client alone also runs the whole mix.
  const perClient = Math.max(PER_CLIENT, Math.ceil(models.length / clients));
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: clients }, async (_, c) => {
      for (let r = 0; r < perClient; r++) {
        const i = k++;
        // Every request its own prompt, the adapters in turn: each step mixes adapters.
        const prompt = Array.from({ length: PROMPT_TOKENS }, (_, j) => 3 + ((i * 7919 + j * 104729) % 31990));
        const m = await timedRequest(url, models[(c + r) % models.length]!, prompt, responseFormat);
        ttft.push(m.ttft);
        tpot.push(m.tpot);
        tokens += m.tokens;
      }
    }),
  );
  return { clients, requests: clients * perClient, tokens, seconds: (performance.now() - t0) / 1000, ttft, tpot };
}

/** One client count over the rounds: the median round's tokens/s (its requests and tokens), latencies
 * over every round's requests, and the ratio to one client's tokens/s of the same round. */
function combine(runs: LevelRun[], oneClient: LevelRun[]): LevelResult {
  const rate = (r: LevelRun) => r.tokens / r.seconds;
  const median = [...runs].sort((a, b) => rate(a) - rate(b))[Math.floor((runs.length - 1) / 2)]!;
  const ttft = runs.flatMap((r) => r.ttft);
  const tpot = runs.flatMap((r) => r.tpot);
  return {
    clients: median.clients,
    ratios: runs.map((r, i) => rate(r) / rate(oneClient[i]!)),
    requests: median.requests,
    tokens: median.tokens,
    tokensPerS: rate(median),
    ttftP50: quantile(ttft, 0.5),
    ttftP99: quantile(ttft, 0.99),
    tpotP50: quantile(tpot, 0.5),
    tpotP99: quantile(tpot, 0.99),
  };
}

/** The bench's server: llama-58m (random weights, a 32000-token vocabulary) and the adapters. */
async function benchServer(): Promise<{
  url: string;
  models: string[];
  tokenizer: TextTokenizer;
  stopIds: number[];
  close(): Promise<void>;
}> {
  const model = randomModel(llamaConfig(PRESET), { seed: 0 });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mixlora-bench-serve-'));
  const adapters: [string, string][] = [];
  SERVED.forEach((method, i) => {
    T.manualSeed(10 + i);
    const a = Adapter.create(method, parseAdapterConfig({ ...methodConfig(method), lora_dropout: 0 }, method), model);
    const d = path.join(dir, method);
    saveAdapter(d, a);
    a.dispose();
    adapters.push([method, d]);
  });
  // A 32000-token vocabulary for the model's ids (the prompts are token ids; replies are decoded).
  const tokenizer = TextTokenizer.fromSentencePiece(
    path.join(packageRoot(), 'test', 'fixtures', 'llama2-tokenizer', 'tokenizer.model'),
  );
  const server = await createServer({
    model,
    tokenizer,
    modelName: 'llama-58m',
    modelSource: 'random',
    adapters,
    adapterRoot: null,
    maxBatch: 16,
    maxQueue: 256,
    apiKey: null,
    bodyLimit: 1 << 20,
  });
  const url = await server.app.listen({ host: '127.0.0.1', port: 0 });
  return {
    url,
    models: ['llama-58m', ...SERVED],
    tokenizer,
    stopIds: server.ctx.stopIds,
    close: async () => {
      await server.shutdown(60_000);
      await releaseGrammarVocabularies(tokenizer);
      model.dispose();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

export async function runServeBench(): Promise<{ results: LevelResult[]; markdown: string }> {
  const log = (s: string) => process.stderr.write(`bench serve: ${s}\n`);
  const { url, models, close } = await benchServer();
  const counts = CLIENTS.includes(1) ? CLIENTS : [1, ...CLIENTS];
  const runs = new Map<number, LevelRun[]>(counts.map((c) => [c, []]));
  try {
    await timedRequest(url, models[models.length - 1]!, [3, 4, 5, 6]); // warm-up
    for (let round = 1; round <= ROUNDS; round++) {
      for (const c of counts) {
        const r = await level(url, models, c);
        log(`round ${round}/${ROUNDS}, ${c} clients: ${(r.tokens / r.seconds).toFixed(1)} tokens/s`);
        runs.get(c)!.push(r);
      }
    }
  } finally {
    await close();
  }
  const results = counts.map((c) => combine(runs.get(c)!, runs.get(1)!));
  const eight = results.find((r) => r.clients === 8);
  const ratio = eight ? quantile(eight.ratios, 0.5) : NaN;
  const range = (xs: number[]) => `${Math.min(...xs).toFixed(2)}-${Math.max(...xs).toFixed(2)}×`;
  const names: Record<string, string> = {
    lora: 'LoRA r 80',
    dora: 'DoRA r 80',
    mixlora: 'MixLoRA r 16 × 8 experts, top-2',
    mixdora: 'MixDoRA r 16 × 8 experts, top-2',
  };
  const ms = (s: number) => fmt(s * 1000);
  const markdown = `## Serving (\`bench/serve.ts\`): continuous batching, mixed adapters; ${new Date().toISOString().slice(0, 10)}, ${machine()}

\`mixlora serve\` in-process on 127.0.0.1 with the bench preset model (llama-58m, random weights, float32) serving the
base model and ${SERVED.length} adapters with the training table's settings (${SERVED.map((m) => names[m]).join(', ')}),
\`--max-batch 16\`. Each client streams ${PER_CLIENT} request(s) one after another (one client: at least one per model;
${PROMPT_TOKENS}-token prompt, up to ${NEW_TOKENS} new tokens, greedy), the models in turn, so every step mixes adapters.
Times are what the clients see (the clients run in the server's process; their overhead is included).
Node flags: ${process.execArgv.join(' ') || 'none'} (\`bin/mixlora\` runs with ${NODE_FLAGS.join(' ')}).
${ROUNDS} rounds, each over every client count in turn: tokens/s is the median round's; "vs 1 client" is the median
over rounds of the ratio to one client's tokens/s in the same round (and its range), since this machine's speed
drifts by tens of percent within minutes; latencies are over the requests of all rounds.

| clients | requests | tokens | tokens/s | vs 1 client (range) | TTFT p50 ms | TTFT p99 ms | per token p50 ms | per token p99 ms |
|---:|---:|---:|---:|---:|---:|---:|---:|---:|
${results
  .map(
    (r) =>
      `| ${r.clients} | ${r.requests} | ${r.tokens} | ${fmt(r.tokensPerS)} | ${quantile(r.ratios, 0.5).toFixed(2)}× (${range(r.ratios)}) | ${ms(r.ttftP50)} | ${ms(r.ttftP99)} | ${ms(r.tpotP50)} | ${ms(r.tpotP99)} |`,
  )
  .join('\n')}

Target: 8 concurrent clients on different adapters >= ${TARGET}× the aggregate tokens/s of the same requests sent one at
a time: ${eight ? `measured ${ratio.toFixed(2)}× (rounds ${range(eight.ratios)}; ${ratio >= TARGET ? 'met' : 'not met'})` : 'not measured (no 8-client run)'}.
`;
  return { results, markdown };
}

/** Replaces BENCHMARKS.md's "## Serving" section, or appends it. */
export function writeServeSection(markdown: string): void {
  writeBenchmarksSection('## Serving', markdown);
}

// ---- structured output ---------------------------------------------------------------------------

/** A schema whose every part is bounded except the list (the random model decides how long it gets). */
const BENCH_SCHEMA = {
  type: 'object',
  properties: {
    id: { type: 'integer', minimum: 0, maximum: 99 },
    kind: { enum: ['alpha', 'beta', 'gamma'] },
    tags: { type: 'array', items: { type: 'string', maxLength: 6 } },
    ok: { type: 'boolean' },
  },
  required: ['id', 'kind', 'tags', 'ok'],
  additionalProperties: false,
};

const FORMATS: [string, unknown][] = [
  ['none', undefined],
  ['json_object', { type: 'json_object' }],
  ['json_schema', { type: 'json_schema', json_schema: { name: 'bench', schema: BENCH_SCHEMA } }],
];

/** The CPU as /proc/cpuinfo names it, with its family's core (AMD family 25: Zen 3) and vector units. */
function cpuDescription(): string {
  let info = '';
  try {
    info = fs.readFileSync('/proc/cpuinfo', 'utf8');
  } catch {
    return os.cpus()[0]?.model ?? 'unknown CPU';
  }
  const field = (name: string) => new RegExp(`^${name}\\s*:\\s*(.*)$`, 'm').exec(info)?.[1]?.trim() ?? '';
  const family = Number(field('cpu family'));
  const vendor = field('vendor_id');
  const core =
    vendor === 'AuthenticAMD'
      ? ({ 23: 'Zen 2 or earlier', 25: 'Zen 3', 26: 'Zen 5' } as Record<number, string>)[family]
      : undefined;
  const flags = field('flags').split(' ');
  const avx = flags.includes('avx512f') ? 'AVX-512' : flags.includes('avx2') ? 'AVX2, no AVX-512' : 'no AVX2';
  return `${field('model name') || os.cpus()[0]?.model}${core ? ` (${core})` : ''}, ${avx}`;
}

/** The serving bench's requests with each response_format (none, json_object, json_schema), the formats
 * interleaved within each round; the median round per format and client count. */
export async function runStructuredBench(): Promise<string> {
  const log = (s: string) => process.stderr.write(`bench serve --structured: ${s}\n`);
  const counts = process.env.BENCH_SERVE_CLIENTS ? CLIENTS : [1, 8];
  const rounds = Number(process.env.BENCH_SERVE_ROUNDS ?? 3);
  const loadBefore = os.loadavg();
  const { url, models, tokenizer, stopIds, close } = await benchServer();
  const runs = new Map<string, LevelRun[]>();
  const compileMs: Record<string, number> = {};
  try {
    await timedRequest(url, models[0]!, [3, 4, 5, 6]); // warm-up
    for (const [name, format] of FORMATS) {
      // What the first request with a format waits for (later ones hit the cache), as the route calls it.
      const t0 = performance.now();
      if (format !== undefined) await compileResponseFormat(format, tokenizer, { vocabSize: PRESET.vocab, stopIds });
      compileMs[name] = performance.now() - t0;
    }
    for (let round = 1; round <= rounds; round++)
      for (const c of counts)
        for (const [name, format] of FORMATS) {
          const r = await level(url, models, c, format);
          log(`round ${round}/${rounds}, ${c} clients, ${name}: ${(r.tokens / r.seconds).toFixed(1)} tokens/s`);
          const key = `${name}|${c}`;
          if (!runs.has(key)) runs.set(key, []);
          runs.get(key)!.push(r);
        }
  } finally {
    await close();
  }
  const loadAfter = os.loadavg();
  const rate = (r: LevelRun) => r.tokens / r.seconds;
  const rows: string[] = [];
  for (const c of counts) {
    const base = runs.get(`none|${c}`)!;
    for (const [name] of FORMATS) {
      const rs = runs.get(`${name}|${c}`)!;
      const median = [...rs].sort((a, b) => rate(a) - rate(b))[Math.floor((rs.length - 1) / 2)]!;
      // Per round against the same round's unconstrained run, then the median over rounds.
      const ratios = rs.map((r, i) => rate(r) / rate(base[i]!));
      const tpot = rs.flatMap((r) => r.tpot);
      const baseTpot = quantile(
        base.flatMap((r) => r.tpot),
        0.5,
      );
      rows.push(
        `| ${name} | ${c} | ${median.requests} | ${fmt(median.tokens / median.requests)} | ${fmt(rate(median))} | ` +
          `${quantile(ratios, 0.5).toFixed(2)}× | ${fmt(quantile(tpot, 0.5) * 1000)} (${(quantile(tpot, 0.5) / baseTpot).toFixed(2)}×) | ` +
          `${fmt(quantile(tpot, 0.99) * 1000)} |`,
      );
    }
  }
  const load = (l: number[]) => l.map((x) => x.toFixed(2)).join(', ');
  return `## Structured output (\`bench/serve.ts --structured\`); ${new Date().toISOString().slice(0, 10)}, ${machine()}

The serving bench's requests (llama-58m, 32000-token vocabulary, base model and ${SERVED.length} adapters in turn, ${PROMPT_TOKENS}-token
prompts, up to ${NEW_TOKENS} new tokens, greedy, streamed) without a \`response_format\`, with \`json_object\`, and with a
\`json_schema\` (an object of a bounded integer, an enum, a list of strings of at most 6 characters and a boolean; a
random model ends it when it closes the list). A constrained row's logits are copied to the host each step, masked
with the grammar's allowed tokens (XGrammar, WebAssembly) and chosen there. ${rounds} rounds, the formats interleaved in
each; tokens/s is the median round's, "vs none" the median over rounds of the ratio to the same round's run without
a format. A value that is complete ends its request, so constrained requests are shorter: more of their time is
prefill and first token, and tokens/s falls where the time per output token (a decode step as the client sees it)
does not. Compiling a format the first time (not in the table): json_object
${fmt(compileMs.json_object!)} ms (with building the vocabulary), json_schema ${fmt(compileMs.json_schema!)} ms; later requests hit the
cache. CPU: ${cpuDescription()}; ${os.cpus().length} cores shared with other work, load average before
${load(loadBefore)}, after ${load(loadAfter)}.

| format | clients | requests | tokens per request | tokens/s | vs none | per token p50 ms (vs none) | per token p99 ms |
|---|---:|---:|---:|---:|---:|---:|---:|
${rows.join('\n')}
`;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  if (process.argv.includes('--structured')) {
    const markdown = await runStructuredBench();
    if (process.argv.includes('--write')) writeBenchmarksSection('## Structured output', markdown);
    process.stdout.write(markdown);
  } else {
    const { results, markdown } = await runServeBench();
    if (process.argv.includes('--write')) writeServeSection(markdown);
    // --json: one JSON line of the results per client count instead (bench/isa.ts reads it)
    process.stdout.write(process.argv.includes('--json') ? `${JSON.stringify(results)}\n` : markdown);
  }
}
