// The training-step benchmarks of `make bench`: mixlora against what users would otherwise run, each
// configuration in its own process (peak memory is per process), interleaved and repeated BENCH_ROUNDS
// times; the fastest round's time and the median round's memory are kept.
//   - mixlora: `mixlora bench --json` (src/bench/benchmark.ts);
//   - HF transformers LlamaForCausalLM + PEFT LoRA/DoRA, eager and torch.compile
//     (bench/python/hf_peft_step.py);
//   - eager PyTorch in the reference MixLoRA tools' style for all four methods (bench/python/train_step.py).
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { NODE_FLAGS } from '../src/util/node-flags.js';
import { packageRoot } from '../src/util/package.js';
import { adapterFlopsPerToken, trainFlopsPerToken } from '../src/bench/flops.js';
import { PRESETS, methodFlopShape } from '../src/bench/benchmark.js';
import type { StepProfile } from '../src/bench/step-profile.js';
import { runPython, threads } from './harness.js';

export const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
export const STEPS = Number(process.env.BENCH_STEPS ?? 5);
export const WARMUP = 2;
/** An instruction-tuning batch: the last SCORED tokens of each row are the answer, the rest is prompt. */
export const SCORED = 16;
export const METHODS = ['lora', 'dora', 'mixlora', 'mixdora'] as const;
export type Method = (typeof METHODS)[number];
const P = PRESETS['llama-58m'];
const SHAPE = [P.vocab, P.hidden, P.intermediate, P.layers, P.heads].join(',');
const root = packageRoot();

export interface StepRun {
  ms_per_step: number;
  ms_per_token: number;
  tokens_per_s: number;
  peak_rss_mib: number;
  profile?: StepProfile;
  torch?: string;
  transformers?: string;
  peft?: string;
}

function log(s: string): void {
  process.stderr.write(`${s}\n`);
}

/** `mixlora bench --json` in its own process. */
export function ours(
  method: Method,
  o: { fused?: number; extra?: string[]; steps?: number; warmup?: number; env?: Record<string, string> } = {},
): StepRun {
  const args = ['bench', '--method', method, '--fused', String(o.fused ?? 1), '--threads', String(threads())];
  args.push('--steps', String(o.steps ?? STEPS), '--warmup', String(o.warmup ?? WARMUP), '--json', ...(o.extra ?? []));
  const r = spawnSync(process.execPath, [...NODE_FLAGS, path.join(root, 'bin', 'mixlora'), ...args], {
    encoding: 'utf8',
    maxBuffer: 1 << 24,
    env: { ...process.env, ...o.env },
  });
  if (r.status !== 0) throw new Error(`mixlora ${args.join(' ')} failed:\n${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as StepRun;
}

/** How many steps a baseline times, and the environment it runs in (e.g. bench/isa.ts's ISA caps). */
export interface BaselineOptions {
  steps?: number;
  warmup?: number;
  env?: Record<string, string>;
}

/** The reference-style eager PyTorch step (float32, llama-58m). */
export function eager(method: Method, variant = 'reference', scored = 0, o: BaselineOptions = {}): StepRun {
  const [steps, warmup] = [o.steps ?? STEPS, o.warmup ?? WARMUP];
  return runPython<StepRun>(
    'train_step.py',
    [
      ...['--method', method, '--threads', String(threads()), '--steps', String(steps), '--warmup', String(warmup)],
      ...['--variant', variant, '--scored', String(scored)],
    ],
    o.env,
  );
}

/** HF transformers + PEFT on the CPU in float32 at llama-58m's shapes; null when it fails (say why). */
export function hfPeft(
  method: 'lora' | 'dora',
  compile: boolean,
  o: BaselineOptions = {},
): StepRun | { error: string } {
  const args = ['--method', method, '--device', 'cpu', '--dtype', 'float32', '--shape', SHAPE];
  args.push('--batch', String(P.batch), '--seq', String(P.seq), '--threads', String(threads()));
  const warmup = o.warmup ?? (compile ? 3 : WARMUP);
  args.push('--steps', String(o.steps ?? STEPS), '--warmup', String(warmup), ...(compile ? ['--compile'] : []));
  try {
    return runPython<StepRun>('hf_peft_step.py', args, o.env);
  } catch (e) {
    const first = (e as Error).message.split('\n').find((l) => /Error|error/.test(l)) ?? 'failed';
    return { error: first.slice(0, 200) };
  }
}

export const isRun = (r: StepRun | { error: string }): r is StepRun => 'ms_per_step' in r;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

/** The fastest round's times; the median round's memory. */
function combine(runs: StepRun[]): StepRun {
  const best = runs.reduce((a, b) => (b.ms_per_step < a.ms_per_step ? b : a));
  return { ...best, peak_rss_mib: median(runs.map((r) => r.peak_rss_mib)) };
}

export interface TrainingResults {
  runs: Record<string, StepRun>;
  compiled: Record<'lora' | 'dora', StepRun | { error: string }>;
  profiles: Record<'lora' | 'mixlora', StepProfile>;
  versions: { torch: string; transformers: string; peft: string };
}

export function runTrainingBench(): TrainingResults {
  const collected: Record<string, StepRun[]> = {};
  const add = (k: string, r: StepRun | { error: string }) => {
    if (!isRun(r)) throw new Error(`${k}: ${r.error}`);
    (collected[k] ??= []).push(r);
    log(`${k}: ${r.ms_per_step.toFixed(0)} ms/step, ${r.peak_rss_mib.toFixed(0)} MiB`);
  };
  for (let round = 0; round < ROUNDS; round++) {
    log(`training steps, round ${round + 1}/${ROUNDS}`);
    for (const m of METHODS) {
      add(`ours:${m}`, ours(m));
      add(`eager:${m}`, eager(m));
      if (m === 'lora' || m === 'dora') add(`hf:${m}`, hfPeft(m, false));
    }
    add('ours:lora-bf16', ours('lora', { extra: ['--dtype', 'bfloat16'] }));
    add('ours:mixlora-bf16', ours('mixlora', { extra: ['--dtype', 'bfloat16'] }));
    add('ours:mixlora×2', ours('mixlora', { fused: 2 }));
    add('eager:mixlora-shared', eager('mixlora', 'shared'));
    add('ours:mixlora-sft', ours('mixlora', { extra: ['--scored', String(SCORED)] }));
    add('eager:mixlora-sft', eager('mixlora', 'reference', SCORED));
    add('ours:mixlora-recompute', ours('mixlora', { extra: ['--recompute'] }));
    add('ours:mixlora×2-recompute', ours('mixlora', { fused: 2, extra: ['--recompute'] }));
  }
  // Once: the 1B-shaped preset's memory (bfloat16 base, short rows), the compiled baselines and the profiles.
  log('llama-1b memory: one MixLoRA adapter, two fused');
  const big = ['--preset', 'llama-1b', '--recompute'];
  add('ours:1b-mixlora', ours('mixlora', { extra: big, steps: 2 }));
  add('ours:1b-mixlora×2', ours('mixlora', { fused: 2, extra: big, steps: 2 }));
  log('torch.compile baselines (the warm-up includes compilation)');
  const compiled = { lora: hfPeft('lora', true), dora: hfPeft('dora', true) };
  log('profiles');
  const profiles = {
    lora: ours('lora', { extra: ['--profile'], steps: 2 }).profile!,
    mixlora: ours('mixlora', { extra: ['--profile'], steps: 2 }).profile!,
  };
  const runs = Object.fromEntries(Object.entries(collected).map(([k, v]) => [k, combine(v)]));
  const hf = runs['hf:lora']!;
  return {
    runs,
    compiled,
    profiles,
    versions: { torch: hf.torch ?? '?', transformers: hf.transformers ?? '?', peft: hf.peft ?? '?' },
  };
}

/** Model + adapter FLOP/s of a step of `method` at llama-58m's shapes, as a share of the probe's float32 rate. */
export function probeShare(method: Method, msPerStep: number, probeGflops: number): number {
  const flops = trainFlopsPerToken(P, P.seq) + adapterFlopsPerToken(P, methodFlopShape(method));
  return (flops * P.batch * P.seq) / (msPerStep / 1000) / (probeGflops * 1e9);
}

export const NAMES: Record<Method, string> = {
  lora: 'LoRA (r 80)',
  dora: 'DoRA (r 80)',
  mixlora: 'MixLoRA (r 16, 8 experts, top-2)',
  mixdora: 'MixDoRA (r 16, 8 experts, top-2)',
};
