// Serving at scale on the bench preset model (llama-58m: vocab 32000, hidden 512, 8 layers, random weights,
// float32), `mixlora serve` in-process on 127.0.0.1, each measurement from one run on this machine:
//   1. lm-eval-style traffic: 8 clients, each scoring items of a ~200-token context and 4 continuations
//      (each continuation its own request, echo + logprobs, max_tokens 1, the 4 sent together, as
//      lm-evaluation-harness's local-completions does): requests/s with the prefix cache vs without;
//   2. 8 clients sharing a 512-token system prompt (plus their own 16 tokens, 16 new tokens streamed):
//      time to first token p50 with the prefix cache vs without;
//   3. a 2048-token prompt arriving while 8 streams decode: those streams' time between tokens (p99) while
//      it is prefilled, chunked (--prefill-chunk 512) vs in one forward;
//   4. mixed-adapter decoding, 8 and 32 concurrent requests (32-token prompts, 64 new tokens) over 4 LoRA
//      adapters (r 80), against transformers + PEFT's mixed-adapter batch generation
//      (`generate(..., adapter_names=[...])`, bench/python/peft_mixed_generate.py, each set as one batch, same
//      threads); and the same over LoRA, DoRA, MixLoRA and MixDoRA (mixlora only: PEFT cannot serve them);
//   5. 64 concurrent 1k-token sequences within a --kv-cache-mib smaller than they need: all answered, the
//      process's peak resident memory stated.
//   node --single-threaded-gc dist/bench/serve-cache.js [--write]    (--write: into BENCHMARKS.md)
//   BENCH_CACHE_ONLY=1,3     only these measurements
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as T from '../src/tensor/index.js';
import { llamaConfig, randomModel } from '../src/models/random.js';
import type { CausalLM } from '../src/models/causal-lm.js';
import { Adapter } from '../src/adapters/adapter.js';
import { parseAdapterConfig } from '../src/adapters/config.js';
import { saveAdapter } from '../src/adapters/io.js';
import { METHODS, PRESETS, methodConfig } from '../src/bench/benchmark.js';
import { TextTokenizer } from '../src/tokenizer/tokenizer.js';
import { createServer } from '../src/serve/server.js';
import { blockBytes } from '../src/serve/block-pool.js';
import { packageRoot } from '../src/util/package.js';
import { fmt, machine, peakRssMiB, runPython, threads, writeBenchmarksSection } from './harness.js';

const PRESET = PRESETS['llama-58m'];
const ONLY = process.env.BENCH_CACHE_ONLY?.split(',').map(Number) ?? null;
const runs = (n: number) => ONLY === null || ONLY.includes(n);
const log = (s: string) => process.stderr.write(`bench serve-cache: ${s}\n`);

function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))]!;
}

/** Token ids 3.. spread over the vocabulary, distinct for each `seed`. */
const ids = (seed: number, n: number) => Array.from({ length: n }, (_, j) => 3 + ((seed * 7919 + j * 104729) % 31990));

interface Setup {
  model: CausalLM;
  tokenizer: TextTokenizer;
  dir: string;
  /** name -> folder */
  adapters: Map<string, string>;
}

function setup(): Setup {
  const model = randomModel(llamaConfig(PRESET), { seed: 0 });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mixlora-bench-cache-'));
  const adapters = new Map<string, string>();
  const save = (name: string, method: (typeof METHODS)[number], seed: number) => {
    T.manualSeed(seed);
    const a = Adapter.create(method, parseAdapterConfig({ ...methodConfig(method), lora_dropout: 0 }, method), model);
    const d = path.join(dir, name);
    saveAdapter(d, a);
    a.dispose();
    adapters.set(name, d);
  };
  for (let i = 0; i < 4; i++) save(`lora${i}`, 'lora', 20 + i);
  METHODS.forEach((m, i) => save(m, m, 10 + i));
  const tokenizer = TextTokenizer.fromSentencePiece(
    path.join(packageRoot(), 'test', 'fixtures', 'llama2-tokenizer', 'tokenizer.model'),
  );
  return { model, tokenizer, dir, adapters };
}

async function serve(
  s: Setup,
  o: { prefixCache?: boolean; prefillChunk?: number; maxBatch?: number; kvCacheMib?: number; adapters?: string[] },
) {
  const server = await createServer({
    model: s.model,
    tokenizer: s.tokenizer,
    modelName: 'llama-58m',
    modelSource: 'random',
    adapters: (o.adapters ?? []).map((n) => [n, s.adapters.get(n)!]),
    adapterRoot: null,
    maxBatch: o.maxBatch ?? 16,
    maxQueue: 1024,
    apiKey: null,
    bodyLimit: 8 << 20,
    prefixCache: o.prefixCache ?? true,
    prefillChunk: o.prefillChunk,
    kvCacheMib: o.kvCacheMib ?? null,
    // The clients share the server's event loop: their requests wait for its forwards to be written, which
    // Node's request timeout would count against them.
    limits: { headersTimeoutMs: 600_000, requestTimeoutMs: 600_000 },
  });
  const url = await server.app.listen({ host: '127.0.0.1', port: 0 });
  return { server, url };
}

async function post(url: string, body: Record<string, unknown>): Promise<Record<string, any>> {
  const r = await fetch(`${url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  if (!r.ok) throw new Error(`HTTP ${r.status}: ${await r.text()}`);
  return (await r.json()) as Record<string, any>;
}

/** A streamed request: when each chunk arrived (ms since the request began) and the first token's time. */
async function stream(url: string, body: Record<string, unknown>) {
  const t0 = performance.now();
  const r = await fetch(`${url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ ...body, stream: true }),
  });
  const reader = r.body!.getReader();
  const arrivals: number[] = [];
  for (;;) {
    const { done } = await reader.read();
    if (done) break;
    arrivals.push(performance.now());
  }
  return { t0, ttft: arrivals[0]! - t0, arrivals };
}

/** 1: lm-eval-style traffic, requests/s. */
async function lmEvalTraffic(s: Setup, prefixCache: boolean): Promise<number> {
  const { server, url } = await serve(s, { prefixCache });
  const ITEMS = 4;
  try {
    await post(url, { model: 'llama-58m', prompt: ids(0, 8), max_tokens: 1 });
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: 8 }, async (_, c) => {
        for (let item = 0; item < ITEMS; item++) {
          const context = ids(1000 + c * 100 + item, 200);
          await Promise.all(
            [0, 1, 2, 3].map((k) =>
              post(url, {
                model: 'llama-58m',
                prompt: [...context, ...ids(50_000 + k, 6)],
                echo: true,
                logprobs: 1,
                max_tokens: 1,
                temperature: 0,
              }),
            ),
          );
        }
      }),
    );
    return (8 * ITEMS * 4) / ((performance.now() - t0) / 1000);
  } finally {
    await server.shutdown(60_000);
  }
}

/** 2: a shared 512-token system prompt, TTFT p50 (ms). */
async function systemPrompt(s: Setup, prefixCache: boolean): Promise<number> {
  const { server, url } = await serve(s, { prefixCache });
  const system = ids(7, 512);
  const ttft: number[] = [];
  try {
    await post(url, { model: 'llama-58m', prompt: ids(0, 8), max_tokens: 1 });
    await Promise.all(
      Array.from({ length: 8 }, async (_, c) => {
        for (let r = 0; r < 3; r++) {
          const m = await stream(url, {
            model: 'llama-58m',
            prompt: [...system, ...ids(300 + c * 10 + r, 16)],
            max_tokens: 16,
            temperature: 0,
          });
          ttft.push(m.ttft);
        }
      }),
    );
    return quantile(ttft, 0.5);
  } finally {
    await server.shutdown(60_000);
  }
}

/** 3: the decoding streams' time between tokens while a 2048-token prompt is prefilled (p99, ms). */
async function longPromptStall(s: Setup, chunk: number): Promise<{ p99: number; p50: number }> {
  const { server, url } = await serve(s, { prefillChunk: chunk });
  try {
    await post(url, { model: 'llama-58m', prompt: ids(0, 8), max_tokens: 1 });
    const streams = Array.from({ length: 8 }, (_, c) =>
      stream(url, { model: 'llama-58m', prompt: ids(400 + c, 32), max_tokens: 400, temperature: 0, ignore_eos: true }),
    );
    await new Promise((r) => setTimeout(r, 1500)); // the streams are decoding
    const from = performance.now();
    await post(url, { model: 'llama-58m', prompt: ids(9, 2048), max_tokens: 1 });
    const to = performance.now();
    const gaps: number[] = [];
    for (const m of await Promise.all(streams)) {
      for (let i = 1; i < m.arrivals.length; i++)
        if (m.arrivals[i]! > from && m.arrivals[i - 1]! < to) gaps.push(m.arrivals[i]! - m.arrivals[i - 1]!);
    }
    return { p99: quantile(gaps, 0.99), p50: quantile(gaps, 0.5) };
  } finally {
    await server.shutdown(60_000);
  }
}

/** 4: concurrent requests over `models`, tokens/s. */
async function mixedDecoding(s: Setup, models: string[], requests: number): Promise<number> {
  const { server, url } = await serve(s, { adapters: models, maxBatch: Math.max(16, requests) });
  try {
    await post(url, { model: models[0]!, prompt: ids(0, 8), max_tokens: 2 });
    const t0 = performance.now();
    const out = await Promise.all(
      Array.from({ length: requests }, (_, i) =>
        post(url, {
          model: models[i % models.length]!,
          prompt: ids(600 + i, 32),
          max_tokens: 64,
          temperature: 0,
          ignore_eos: true,
        }),
      ),
    );
    const tokens = out.reduce((n, r) => n + (r.usage.completion_tokens as number), 0);
    return tokens / ((performance.now() - t0) / 1000);
  } finally {
    await server.shutdown(60_000);
  }
}

function peftMixed(rows: number): number {
  const shape = [PRESET.vocab, PRESET.hidden, PRESET.intermediate, PRESET.layers, PRESET.heads].join(',');
  const r = runPython<{ tokens_per_s: number }>('peft_mixed_generate.py', [
    '--shape',
    shape,
    '--rows',
    String(rows),
    '--prompt',
    '32',
    '--new',
    '64',
    '--threads',
    String(threads()),
  ]);
  return r.tokens_per_s;
}

/** 5: 64 concurrent 1k-token sequences in a KV cache of `mib` MiB. */
async function manyLong(s: Setup, mib: number) {
  const { server, url } = await serve(s, { maxBatch: 64, kvCacheMib: mib });
  try {
    const t0 = performance.now();
    const out = await Promise.all(
      Array.from({ length: 64 }, (_, i) =>
        post(url, { model: 'llama-58m', prompt: ids(800 + i, 1000), max_tokens: 24, temperature: 0, ignore_eos: true }),
      ),
    );
    const answered = out.filter((r) => r.choices[0].finish_reason === 'length').length;
    return {
      answered,
      seconds: (performance.now() - t0) / 1000,
      preemptions: server.ctx.engine.preemptions,
      peakBatch: server.ctx.engine.peakBatch,
    };
  } finally {
    await server.shutdown(120_000);
  }
}

async function main(): Promise<void> {
  const s = setup();
  const lines: string[] = [];
  const row = (...cells: string[]) => lines.push(`| ${cells.join(' | ')} |`);
  try {
    if (runs(1)) {
      const on = await lmEvalTraffic(s, true);
      const off = await lmEvalTraffic(s, false);
      log(`lm-eval traffic: ${on.toFixed(2)} vs ${off.toFixed(2)} requests/s`);
      row(
        'lm-eval-style traffic (8 clients, 4 continuations per 200-token context)',
        `${fmt(on)} requests/s`,
        `${fmt(off)} requests/s`,
        `${(on / off).toFixed(2)}× (target ≥ 2×)`,
      );
    }
    if (runs(2)) {
      const on = await systemPrompt(s, true);
      const off = await systemPrompt(s, false);
      log(`system prompt TTFT p50: ${on.toFixed(1)} vs ${off.toFixed(1)} ms`);
      row(
        '8 clients sharing a 512-token system prompt: TTFT p50',
        `${fmt(on)} ms`,
        `${fmt(off)} ms`,
        `${(on / off).toFixed(2)}× (target ≤ 0.3×)`,
      );
    }
    if (runs(3)) {
      const chunked = await longPromptStall(s, 512);
      const whole = await longPromptStall(s, 4096);
      log(`long prompt stall p99: chunked ${chunked.p99.toFixed(0)} ms vs ${whole.p99.toFixed(0)} ms`);
      row(
        'a 2048-token prompt arriving while 8 streams decode: their time between tokens during its prefill, p99 (p50)',
        `${fmt(chunked.p99)} ms (${fmt(chunked.p50)}) chunked by 512`,
        `${fmt(whole.p99)} ms (${fmt(whole.p50)}) in one forward`,
        `${(chunked.p99 / whole.p99).toFixed(2)}×`,
      );
    }
    const peft: string[] = [];
    if (runs(4)) {
      const loras = ['lora0', 'lora1', 'lora2', 'lora3'];
      for (const n of [8, 32]) {
        const ours = await mixedDecoding(s, loras, n);
        const theirs = peftMixed(n);
        const mix = await mixedDecoding(s, [...METHODS], n);
        log(`${n} requests: ${ours.toFixed(1)} vs PEFT ${theirs.toFixed(1)} tokens/s; mixed methods ${mix.toFixed(1)}`);
        peft.push(
          `| ${n} | ${fmt(ours)} | ${fmt(theirs)} | ${(ours / theirs).toFixed(2)}× (target ≥ 5×) | ${fmt(mix)} |`,
        );
      }
    }
    let many = '';
    if (runs(5)) {
      const perToken = blockBytes(s.model.config, s.model.dtype) / 16;
      const needed = (64 * 1024 * perToken) / 2 ** 20;
      const mib = Math.floor(needed / 2);
      const r = await manyLong(s, mib);
      log(`64 × 1k: ${r.answered}/64 in ${r.seconds.toFixed(1)} s, ${r.preemptions} preemptions`);
      many =
        `64 concurrent requests of 1000 prompt tokens and 24 new ones (\`--max-batch 64\`) with \`--kv-cache-mib ${mib}\`, half ` +
        `of the ${Math.ceil(needed)} MiB their 1024 positions each would take: ${r.answered} of 64 answered in ` +
        `${r.seconds.toFixed(1)} s (at most ${r.peakBatch} decoding at once, ${r.preemptions} computed again after ` +
        `giving their blocks up); peak resident memory of the whole process (model, adapters, clients) ` +
        `${peakRssMiB().toFixed(0)} MiB.`;
    }
    const markdown = `## Serving at scale (\`bench/serve-cache.ts\`): paged KV, prefix caching, chunked prefill; ${new Date().toISOString().slice(0, 10)}, ${machine()}

\`mixlora serve\` in-process on 127.0.0.1 with the bench preset model (llama-58m, random weights, float32),
\`--max-batch 16\` unless said, default KV cache. Each line from one run on this machine; the clients run in the
server's process (their overhead included). Prompts are token ids.

| measurement | with | without | ratio |
|---|---:|---:|---:|
${lines.join('\n')}
${
  peft.length
    ? `
Mixed-adapter decoding: concurrent requests (32-token prompts, 64 new tokens each, greedy) over 4 LoRA adapters
(r 80, every projection), through HTTP; against transformers + PEFT's mixed-adapter batch generation
(\`model.generate(..., adapter_names=[...])\`, bench/python/peft_mixed_generate.py) on a model of the same shapes with
the same 4 adapters, each set of requests as one batch, in process, the same ${threads()} threads. The last column serves
LoRA, DoRA, MixLoRA and MixDoRA (r 16 × 8 experts, top-2) side by side, which PEFT cannot.

| requests | mixlora tokens/s | PEFT tokens/s | mixlora / PEFT | mixlora, 4 methods mixed |
|---:|---:|---:|---:|---:|
${peft.join('\n')}

Where a decode step's time goes, by phase and batch mix: \`node dist/bench/serve-step.js\`. Decoding a few rows
reads every base weight once per step whatever the batch, so this model's step is bound by memory bandwidth,
and each adapter's LoRA products over its own few rows add a fixed cost per product; PEFT's one batch pays
Python's per-module overhead once per step for all rows, which is why the ratio shrinks as the batch grows.
`
    : ''
}${many ? `\n${many}\n` : ''}`;
    if (process.argv.includes('--write')) writeBenchmarksSection('## Serving at scale', markdown);
    process.stdout.write(markdown);
  } finally {
    s.model.dispose();
    fs.rmSync(s.dir, { recursive: true, force: true });
  }
}

await main();
