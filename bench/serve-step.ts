// One continuous-batching decode step of `mixlora serve`, timed by phase: the same KV pool, mixed
// AdapterBatch and model forward the engine runs, on the bench preset model (llama-58m) with its four
// adapters (LoRA, DoRA r 80; MixLoRA, MixDoRA r 16 × 8, top-2), for a few batch mixes. Phases are
// timed by wrapping the hooks and the cache (libtorch on CPU is synchronous, so wall time is theirs).
//   node dist/bench/serve-step.js                 batches 1 of each kind, then 5, 8 and 16 mixed rows
//   BENCH_STEP_REPS=N                              timed steps per batch (median; default 5)
//   BENCH_STEP_ONLY='1 base,8 mixed'               only these batches
//   BENCH_STEP_OPS=1                               also time every addon call by name
//   BENCH_STEP_STACKED=0                           mixed steps range by range, not stacked
import * as T from '../src/tensor/index.js';
import { llamaConfig, randomModel } from '../src/models/random.js';
import { Adapter } from '../src/adapters/adapter.js';
import { parseAdapterConfig } from '../src/adapters/config.js';
import { AdapterBatch, type RowRange } from '../src/adapters/batch.js';
import { AdapterStackCache } from '../src/adapters/adapter-stack.js';
import { METHODS, PRESETS, methodConfig } from '../src/bench/benchmark.js';
import { BlockPool, blocksFor } from '../src/serve/block-pool.js';
import { decodeCache, prefillCache } from '../src/serve/paged-cache.js';
import type { AttentionCache } from '../src/models/kvcache.js';
import type { ForwardHooks } from '../src/models/hooks.js';
import { native } from '../src/tensor/native.js';
import { linearOf, type LayerWeights } from '../src/models/weights.js';
import { frozenLinear } from '../src/models/frozen-linear.js';

const PROMPT = 32;
const REPS = Number(process.env.BENCH_STEP_REPS ?? 5);

const phases = new Map<string, number>();
// BENCH_STEP_OPS=1: also time every call into the addon by function name (ms and calls per step).
const opTimes = new Map<string, [number, number]>();
if (process.env.BENCH_STEP_OPS) {
  const table = native as unknown as Record<string, unknown>;
  for (const [name, f] of Object.entries(table)) {
    if (typeof f !== 'function') continue;
    const numel = table.numel as (id: number) => number;
    table[name] = (...args: unknown[]) => {
      const c0 = process.cpuUsage(); // CPU time: other processes' load does not count
      try {
        return (f as (...a: unknown[]) => unknown)(...args);
      } finally {
        const c = process.cpuUsage(c0);
        // Products by weight size: the frozen model's (> 100k elements) or an adapter's.
        const key = name === 'linear' ? `linear-${numel(args[1] as number) > 100_000 ? 'base' : 'small'}` : name;
        const e = opTimes.get(key) ?? [0, 0];
        opTimes.set(key, [e[0] + (c.user + c.system) / 1000, e[1] + 1]);
      }
    };
  }
}
function timed<R>(name: string, fn: () => R): R {
  const c0 = process.cpuUsage(); // CPU time, as the step totals
  try {
    return fn();
  } finally {
    const c = process.cpuUsage(c0);
    phases.set(name, (phases.get(name) ?? 0) + (c.user + c.system) / 1000);
  }
}

/** Hooks that time each projection and feed-forward block by the kind of adapter that runs it. */
function timedHooks(inner: ForwardHooks, label: string): ForwardHooks {
  return {
    beginForward: (m) => inner.beginForward?.(m),
    project: (l, name, x, lin) =>
      timed(`${label} ${name.startsWith('o') || name.length === 6 ? 'attn-proj' : 'mlp'}`, () =>
        inner.project(l, name, x, lin),
      ),
    mlp: (l, x, w, act) => timed(`${label} mlp`, () => inner.mlp(l, x, w, act)),
  };
}

function timedCache(inner: AttentionCache): AttentionCache {
  return {
    length: inner.length,
    update: (l, k, v) => timed('kv write', () => inner.update(l, k, v)),
    ...(inner.attend ? { attend: (l, q, o) => timed('attention', () => inner.attend!(l, q, o)) } : {}),
    advance: (n) => inner.advance(n),
  };
}

function main(): void {
  const model = randomModel(llamaConfig(PRESETS['llama-58m']), { seed: 0 });
  const adapters = new Map<string, Adapter | null>([['base', null]]);
  METHODS.forEach((m, i) => {
    T.manualSeed(10 + i);
    const a = Adapter.create(m, parseAdapterConfig({ ...methodConfig(m), lora_dropout: 0 }, m), model);
    // As the server's registry does (BENCH_STEP_THAW=1: without the precomputed DoRA scales).
    adapters.set(m, process.env.BENCH_STEP_THAW ? a : a.freezeForInference(model));
  });
  const kinds = [...adapters.keys()];
  const pool = new BlockPool(model.config, 16 * blocksFor(PROMPT + 2), model.dtype, model.device);
  pool.ensureAllocated();
  // 16 rows prefilled with distinct prompts (base model: the cache content does not change the cost).
  const rows = Array.from({ length: 16 }, (_, i) => {
    const blocks = Array.from({ length: blocksFor(PROMPT + 2) }, () => pool.allocate()!);
    T.noGrad(() =>
      T.tidy(() => {
        const ids = T.tensor([Array.from({ length: PROMPT }, (_, j) => 3 + ((i * 7919 + j * 104729) % 31990))], {
          dtype: 'int64',
        }); // [1, P]
        const paged = prefillCache(pool, model.config, [{ blocks, cached: 0, fresh: PROMPT }], PROMPT);
        model.forward(ids, { cache: paged.cache, lastOnly: true });
      }),
    );
    return { blocks, len: PROMPT, kind: kinds[i % kinds.length]! };
  });

  const batches: [string, typeof rows][] = [
    ...kinds.map((k): [string, typeof rows] => [`1 ${k}`, rows.filter((r) => r.kind === k).slice(0, 1)]),
    ...kinds.map((k): [string, typeof rows] => [`8 ${k}`, rows.slice(0, 8).map((r) => ({ ...r, kind: k }))]),
    ['5 mixed', rows.slice(0, 5)],
    ['8 mixed', rows.slice(0, 8)],
    ['16 mixed', rows.slice(0, 16)],
  ].filter(
    ([name]) => !process.env.BENCH_STEP_ONLY || process.env.BENCH_STEP_ONLY.split(',').includes(name as string),
  ) as [string, typeof rows][];
  // As the engine: steps that mix adapters run them stacked (BENCH_STEP_STACKED=0: range by range).
  const stacks = process.env.BENCH_STEP_STACKED === '0' ? undefined : new AdapterStackCache();
  for (const [name, batch] of batches) {
    const ordered = [...batch].sort((a, b) => kinds.indexOf(a.kind) - kinds.indexOf(b.kind));
    const ranges: RowRange[] = [];
    for (const r of ordered) {
      const last = ranges[ranges.length - 1];
      if (last && last.adapter === adapters.get(r.kind)) last.count++;
      else ranges.push({ start: ranges.reduce((n, x) => n + x.count, 0), count: 1, adapter: adapters.get(r.kind)! });
    }
    const label = ranges.length === 1 ? name.split(' ')[1]! : 'mixed';
    const totals: number[] = [];
    // CPU time of the process: on a shared machine, less disturbed by other processes than wall time
    // (one torch thread: MIXLORA_NUM_THREADS=1).
    const cpu: number[] = [];
    let breakdown = new Map<string, number>();
    for (let rep = 0; rep < REPS + 1; rep++) {
      phases.clear();
      if (rep === REPS) opTimes.clear();
      const t0 = performance.now();
      const c0 = process.cpuUsage();
      T.noGrad(() =>
        T.tidy(() => {
          const hooks = ranges.every((r) => r.adapter === null)
            ? undefined
            : new AdapterBatch(ranges, { training: false, record: 'none', stacks });
          const { cache, keyMask, positions } = timed('cache setup', () => decodeCache(pool, model.config, ordered));
          const ids = T.tensor(
            ordered.map(() => [5]),
            { dtype: 'int64' },
          ); // [B, 1]
          const logits = timed('forward', () =>
            model.forward(ids, {
              attentionMask: keyMask,
              positions,
              cache: timedCache(cache),
              hooks: timedHooks(
                hooks ?? {
                  project: (_l, _n, x, lin) => frozenLinear(x, lin),
                  mlp: (_l, x, w) => swigluPlain(x, w),
                },
                label,
              ),
              lastOnly: true,
            }),
          );
          timed('argmax', () => logits.select(1, 0).argmax(-1).toNumbers());
          hooks?.dispose();
        }),
      );
      if (rep === 0) continue; // warm-up
      totals.push(performance.now() - t0);
      const c = process.cpuUsage(c0);
      cpu.push((c.user + c.system) / 1000);
      if (rep === 1 || totals[totals.length - 1]! <= Math.min(...totals)) breakdown = new Map(phases);
    }
    totals.sort((a, b) => a - b);
    const med = totals[Math.floor(totals.length / 2)]!;
    cpu.sort((a, b) => a - b);
    const cpuMed = cpu[Math.floor(cpu.length / 2)]!;
    const parts = [...breakdown].map(([k, v]) => `${k} ${v.toFixed(1)}`).join(', ');
    if (opTimes.size > 0) {
      const top = [...opTimes].sort((a, b) => b[1][0] - a[1][0]);
      const calls = top.reduce((n, [, [, c]]) => n + c, 0);
      const ms = top.reduce((n, [, [t]]) => n + t, 0);
      console.log(
        `  addon: ${calls} calls, ${ms.toFixed(1)} ms; ` +
          top
            .slice(0, 14)
            .map(([k, [t, c]]) => `${k} ${t.toFixed(1)}/${c}`)
            .join(', '),
      );
    }
    console.log(
      `${name.padEnd(10)} step ${med.toFixed(1)} ms, cpu ${cpuMed.toFixed(1)} ms (${(cpuMed / batch.length).toFixed(1)} ms/row)  [cpu ms, min run: ${parts}]`,
    );
  }
  pool.dispose();
  for (const a of adapters.values()) a?.dispose();
  model.dispose();
}

function swigluPlain(x: T.Tensor, w: LayerWeights): T.Tensor {
  const [g, u, d] = (['gate_proj', 'up_proj', 'down_proj'] as const).map((n) => linearOf(w, n));
  return frozenLinear(T.swiglu(frozenLinear(x, g!), frozenLinear(x, u!)), d!);
}

main();
