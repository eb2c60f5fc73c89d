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
//   BENCH_SERVE_REQUESTS=N                requests per client (default 3; one client sends one per model)
//   BENCH_SERVE_CLIENTS=1,8               client counts (default 1,4,8,16)
//   BENCH_SERVE_TOKENS=N                  new tokens per request (default 64)
//   BENCH_SERVE_METHODS=lora,mixlora      adapters served (default all four)
//   BENCH_SERVE_ROUNDS=N                  rounds over all client counts (default 5): each count's median
//                                         round is reported, and the ratio to one client per round, since
//                                         a shared machine's speed drifts by tens of percent within minutes
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as T from '../src/tensor/index.js';
import { llamaConfig, randomModel } from '../src/models/random.js';
import { Adapter } from '../src/adapters/adapter.js';
import { parseAdapterConfig } from '../src/adapters/config.js';
import { saveAdapter } from '../src/adapters/io.js';
import { METHODS, PRESETS, methodConfig } from '../src/train/benchmark.js';
import { TextTokenizer } from '../src/tokenizer/tokenizer.js';
import { createServer } from '../src/serve/server.js';
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
async function timedRequest(url: string, model: string, prompt: number[]) {
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

async function level(url: string, models: string[], clients: number): Promise<LevelRun> {
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
        const m = await timedRequest(url, models[(c + r) % models.length]!, prompt);
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

export async function runServeBench(): Promise<{ results: LevelResult[]; markdown: string }> {
  const log = (s: string) => process.stderr.write(`bench serve: ${s}\n`);
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
  const models = ['llama-58m', ...SERVED];
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
    await server.shutdown(60_000);
    model.dispose();
    fs.rmSync(dir, { recursive: true, force: true });
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

if (import.meta.url === `file://${process.argv[1]}`) {
  const { markdown } = await runServeBench();
  if (process.argv.includes('--write')) writeServeSection(markdown);
  process.stdout.write(markdown);
}
